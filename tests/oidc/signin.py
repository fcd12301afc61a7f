"""Sign in to a running Fascicolo through an independent OpenID Provider (oidc-provider).

Usage: python3 signin.py FASCICOLO_URL PROVIDER_URL CODICE_FISCALE
Drives a browser-like session: Fascicolo's /auth/login, the provider's login and consent
forms, back to Fascicolo's callback, then checks the signed-in page names the person.
"""
import re
import sys
from urllib.parse import urljoin

import requests

site, provider, cf = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/"), sys.argv[3]
s = requests.Session()


def submit_first_form(page, extra):
    """Post the page's first form with its hidden inputs plus `extra`."""
    m = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    if not m:
        raise SystemExit(f"no form in the provider's page {page.url}:\n{page.text[:2000]}")
    data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', m.group(2)))
    data.update(extra)
    return s.post(urljoin(page.url, m.group(1)), data=data)


r = s.get(f"{site}/auth/login?next=/me")
assert r.url.startswith(provider), f"not sent to the provider: {r.url}"
r = submit_first_form(r, {"login": cf, "password": "any"})
for _ in range(3):  # consent screen(s)
    if not r.url.startswith(provider):
        break
    r = submit_first_form(r, {})
assert r.url == f"{site}/me", f"sign-in did not land on /me: {r.status_code} {r.url}\n{r.text[:1000]}"
assert cf in r.text and "Il mio fascicolo" in r.text, r.text[:2000]
print(f"signed in through {provider} as {cf}")

# the provider's answer cannot be replayed (state is single use)
callback = next(h.url for h in r.history if h.url.startswith(f"{site}/auth/callback"))
assert s.get(callback, allow_redirects=False).status_code == 400, "a replayed callback must be refused"
print("replayed callback refused")

# sign-out ends the session and goes back to the provider's end-session endpoint
csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
out = s.post(f"{site}/auth/logout", data={"csrf": csrf}, allow_redirects=False)
assert out.status_code == 303 and out.headers["location"].startswith(provider), out.headers
assert "id_token_hint=" in out.headers["location"]
after = s.get(f"{site}/me", allow_redirects=False)
assert after.status_code == 303, "the session must be gone after sign-out"
print("signed out (session ended, RP-initiated logout at the provider)")
