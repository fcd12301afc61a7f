"""Drive a running Fascicolo server with an independent FHIR client (fhirpy) and check every
resource it returns with fhir.resources 6.4.0 (strict R4 models).

Usage: python3 test_fhirpy.py http://127.0.0.1:8080/fhir/r4
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""
import os
import sys
import traceback

from fhir.resources import construct_fhir_element
from fhirpy import SyncFHIRClient

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/fhir/r4"
client = SyncFHIRClient(BASE, authorization=f"Bearer {os.environ['FHIR_TOKEN']}", extra_headers={"Accept": "application/fhir+json"})
checked = 0


def strict(resource):
    """Parse with the strict R4 model: raises on anything that is not valid R4."""
    global checked
    data = dict(resource)
    construct_fhir_element(data["resourceType"], data)
    checked += 1
    if data["resourceType"] == "Bundle":
        for e in data.get("entry", []):
            if "resource" in e:
                strict(e["resource"])


def test_create_and_read():
    p = client.resource("Patient", name=[{"family": "Ferrari", "given": ["Chiara"]}], gender="female",
                        birthDate="1972-09-03",
                        identifier=[{"system": "http://hl7.it/sid/codiceFiscale", "value": "FRRCHR72P43F205A"}])
    p.save()
    assert p["id"], "server assigned no id"
    strict(p.serialize())
    back = client.reference("Patient", p["id"]).to_resource()
    strict(back.serialize())
    assert back["name"][0]["family"] == "Ferrari"
    assert back["meta"]["versionId"] == "1"
    back["gender"] = "other"
    back.save()
    again = client.reference("Patient", p["id"]).to_resource()
    assert again["meta"]["versionId"] == "2" and again["gender"] == "other"
    return p["id"]


def test_search_with_paging(pid):
    for i in range(23):
        o = client.resource("Observation", status="final",
                            code={"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
                            subject={"reference": f"Patient/{pid}"},
                            effectiveDateTime=f"2023-02-{i + 1:02d}T07:30:00+01:00",
                            valueQuantity={"value": 85 + i, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"})
        o.save()
    found = client.resources("Observation").search(subject=f"Patient/{pid}", code="http://loinc.org|2339-0").sort("-date").limit(5).fetch_all()
    assert len(found) == 23, f"fetch_all over pages returned {len(found)}"
    assert len({o["id"] for o in found}) == 23, "duplicates across pages"
    dates = [o["effectiveDateTime"] for o in found]
    assert dates == sorted(dates, reverse=True), "not sorted by -date"
    for o in found:
        strict(o.serialize())
    # fhirpy's count() sends the vendor parameter _totalMethod; use the standard _summary=count
    counted = client.execute("Observation", method="get", params={"subject": f"Patient/{pid}", "value-quantity": "ge100", "_summary": "count"})
    assert counted["total"] == 8, counted
    bundle = client.execute("Observation", method="get", params={"patient": pid, "_count": "4"})
    strict(bundle)
    assert any(l["relation"] == "next" for l in bundle["link"])


def test_transaction():
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:9a1c3f7e-2b7d-4b8e-9f41-0c6a1d3e5f70",
         "resource": {"resourceType": "Patient", "name": [{"family": "Moretti"}], "gender": "male"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:9a1c3f7e-2b7d-4b8e-9f41-0c6a1d3e5f70"},
                      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]},
                      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}},
         "request": {"method": "POST", "url": "Condition"}}]}
    resp = client.execute("", method="post", data=bundle)
    strict(resp)
    assert resp["type"] == "transaction-response"
    pid = resp["entry"][0]["resource"]["id"]
    cond = client.resources("Condition").search(patient=pid).fetch()
    assert len(cond) == 1 and cond[0]["subject"]["reference"] == f"Patient/{pid}"
    strict(cond[0].serialize())


def test_history(pid):
    h = client.execute(f"Patient/{pid}/_history", method="get")
    strict(h)
    assert [e["request"]["method"] for e in h["entry"]] == ["PUT", "POST"]
    t = client.execute("Observation/_history", method="get", params={"_count": "5"})
    strict(t)
    assert len(t["entry"]) == 5


def test_everything_and_metadata(pid):
    everything = client.execute(f"Patient/{pid}/$everything", method="get", params={"_count": "100"})
    strict(everything)
    types = [e["resource"]["resourceType"] for e in everything["entry"]]
    assert types.count("Observation") == 23 and "Patient" in types
    cap = client.execute("metadata", method="get")
    strict(cap)


def main():
    passed = failed = 0
    state = {}
    steps = [
        ("create, read, update", lambda: state.__setitem__("pid", test_create_and_read())),
        ("search with paging", lambda: test_search_with_paging(state["pid"])),
        ("transaction", test_transaction),
        ("history", lambda: test_history(state["pid"])),
        ("$everything and metadata", lambda: test_everything_and_metadata(state["pid"])),
    ]
    for name, fn in steps:
        try:
            fn()
            passed += 1
            print(f"ok: {name}")
        except Exception:
            failed += 1
            print(f"FAILED: {name}")
            traceback.print_exc()
    print(f"fhirpy: {checked} resources validated with fhir.resources 6.4.0")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
