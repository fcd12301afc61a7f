// An independent OpenID Provider for CI: panva's oidc-provider (OpenID Certified), with its
// development interactions (a login form that accepts any user name as the account id).
// The account id is the codice fiscale; the ID token carries it the way SPID/CIE do
// (https://attributes.eid.gov.it/fiscal_number = TINIT-<CF>).
// Usage: PORT=... REDIRECT_URI=... POST_LOGOUT_URI=... node provider.mjs
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const fiscal = 'https://attributes.eid.gov.it/fiscal_number';

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'fascicolo',
    client_secret: 'fascicolo-ci-secret',
    redirect_uris: [process.env.REDIRECT_URI],
    post_logout_redirect_uris: [process.env.POST_LOGOUT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  claims: { openid: ['sub'], profile: ['name', fiscal] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['fascicolo-ci-cookie-key'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, name: 'Persona di prova', [fiscal]: `TINIT-${id}` }; } };
  },
});
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
