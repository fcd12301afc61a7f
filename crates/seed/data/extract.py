"""Regenerates this folder's TSV files from the shared corpora (../../../../shared/corpora/it-codes).

Run: python3 extract.py /path/to/corpora/it-codes
Only filtering and re-formatting happen here; the data is the corpora's (see README.md).
"""
import json, re, sys

src = sys.argv[1] if len(sys.argv) > 1 else "../../../../shared/corpora/it-codes"

# municipalities (codice catastale, name, province, validity) for codice fiscale birth places
muni = json.load(open(f"{src}/municipalities.json"))
with open("municipalities.tsv", "w") as out:
    out.write("# codice_catastale\tname\tprovince\tvalid_from\tvalid_to\n")
    for m in sorted(muni, key=lambda m: (m["code"], m["date_created"])):
        out.write("\t".join([m["code"], m["name"], m["province"], m["date_created"][:10], (m["date_deleted"] or "")[:10]]) + "\n")

def concepts(path):
    x = open(path).read()
    for c in re.findall(r"<concept>(.*?)</concept>", x, re.S):
        code = re.search(r'<code value="([^"]+)"', c).group(1)
        disp = re.search(r'<display value="([^"]*)"', c).group(1)
        props = dict(re.findall(r'<code value="([^"]+)"/>\s*<value\w+ value="([^"]*)"', c))
        yield code, disp, props

LOMBARDY = ("012", "013", "014", "015", "016", "017", "018", "019", "020", "097", "098", "108")
with open("istat-lombardy.tsv", "w") as out:
    out.write("# istat_code\tname\n")
    for code, disp, _ in concepts(f"{src}/CS_istat-comuni.xml"):
        if code[:3] in LOMBARDY:
            out.write(f"{code}\t{disp}\n")

with open("ats-lombardy.tsv", "w") as out:
    out.write("# code\tname\tistat_seat\n")
    for code, disp, p in concepts(f"{src}/CS_ASL.xml"):
        if p.get("regione") == "030" and code.startswith("0303"):
            out.write(f"{code}\t{disp}\t{p.get('comune', '')}\n")

with open("hospitals-lombardy.tsv", "w") as out:
    out.write("# code\tname\tistat_comune\tats\tazienda\ttipo_struttura\tnatura_giuridica\n")
    for code, disp, p in concepts(f"{src}/CS_strutture_ricovero.xml"):
        if p.get("regione") == "030":
            out.write("\t".join([code, disp, p.get("comune", ""), p.get("aslTerritoriale", ""), p.get("codiceAzienda", ""),
                                 p.get("tipoStruttura", ""), p.get("naturaGiuridica", "")]) + "\n")

countries = json.load(open(f"{src}/countries.json"))
with open("countries.tsv", "w") as out:
    out.write("# codice_catastale\tname\tvalid_from\tvalid_to\n")
    for c in sorted(countries, key=lambda c: (c["code"], c["date_created"])):
        out.write("\t".join([c["code"], c["name"], c["date_created"][:10], (c["date_deleted"] or "")[:10]]) + "\n")
