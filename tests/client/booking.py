"""Drive a running Fascicolo demo server's booking operations as an independent SMART app
would (IHE ITI Scheduling: Appointment/$find, $hold, $book, with `requests` only) and check
every returned resource with fhir.resources 6.4.0 (strict R4 models).

Usage: python3 booking.py http://127.0.0.1:8080/fhir/r4 <citizen token (Anna)> <CUP operator token>
Exits non-zero on the first failure.
"""
import sys

import requests
from fhir.resources import construct_fhir_element

BASE, ANNA, DESK = sys.argv[1], sys.argv[2], sys.argv[3]
NRE_SYSTEM = "urn:oid:2.16.840.1.113883.2.9.4.3.9"


def call(token, op, params, expect=200):
    r = requests.post(
        f"{BASE}/Appointment/{op}",
        json={"resourceType": "Parameters", "parameter": params},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=30,
    )
    assert r.status_code == expect, f"{op}: {r.status_code} (expected {expect}): {r.text[:500]}"
    body = r.json()
    construct_fhir_element(body["resourceType"], body)
    return body


def get(token, path):
    r = requests.get(f"{BASE}/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, f"{path}: {r.status_code}: {r.text[:300]}"
    body = r.json()
    construct_fhir_element(body["resourceType"], body)
    return body


def ext(resource, url):
    return next((e for e in resource.get("extension", []) if e["url"] == url), {})


def nre_of(token, patient, code):
    bundle = get(token, f"ServiceRequest?subject=Patient/{patient}&_count=100")
    for e in bundle.get("entry", []):
        sr = e["resource"]
        if sr["code"]["coding"][0]["code"] == code:
            return next(i["value"] for i in sr["identifier"] if i["system"] == NRE_SYSTEM)
    raise AssertionError(f"{patient} has no prescription {code}")


def referral(nre):
    return {"name": "referral-identifier", "valueIdentifier": {"system": NRE_SYSTEM, "value": nre}}


def reference(appointment_id):
    return {"name": "appointment-reference", "valueReference": {"reference": f"Appointment/{appointment_id}"}}


# the server says what it supports
cap = get(ANNA, "metadata")
appt = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Appointment")
assert {o["name"] for o in appt.get("operation", [])} >= {"find", "hold", "book"}, appt.get("operation")

# $find: proposed appointments for Anna's abdominal ultrasound, ranked, each with its slot
nre = nre_of(ANNA, "verdi-anna", "88.76.1")
found = call(ANNA, "$find", [referral(nre)])
proposed = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "match"]
assert len(proposed) >= 3, found
for p in proposed:
    assert p["status"] == "proposed" and p["id"].endswith("." + nre), p["id"]
    assert p["slot"][0]["reference"].startswith("Slot/")
    assert isinstance(ext(p, "urn:fascicolo:within-deadline").get("valueBoolean"), bool)
ranks = [(not ext(p, "urn:fascicolo:in-guarantee-area")["valueBoolean"], p["start"]) for p in proposed]
assert ranks == sorted(ranks), ranks

# bad input: a malformed NRE, no NRE
call(ANNA, "$find", [referral("12")], expect=400)
call(ANNA, "$find", [], expect=400)

# $hold then $book the first; the stored appointment reads back the same
held = call(ANNA, "$hold", [reference(proposed[0]["id"])])
assert held["entry"][0]["resource"]["status"] == "pending"
assert ext(held["entry"][0]["resource"], "urn:fascicolo:hold-until")["valueInstant"]
booked = call(ANNA, "$book", [reference(proposed[0]["id"])])["entry"][0]["resource"]
assert booked["status"] == "booked", booked
stored = get(ANNA, f"Appointment/{booked['id']}")
assert stored["slot"] == booked["slot"] and stored["status"] == "booked"
slot = get(ANNA, booked["slot"][0]["reference"])
assert slot["status"] == "busy", slot
# the same prescription again: 409 with an OperationOutcome
call(ANNA, "$book", [reference(proposed[1]["id"])], expect=409)

# the CUP desk books Anna's eye examination, naming her
eye = nre_of(ANNA, "verdi-anna", "95.02")
who = {"name": "patient-reference", "valueReference": {"reference": "Patient/verdi-anna"}}
call(DESK, "$find", [referral(eye)], expect=400)
desk_found = call(DESK, "$find", [referral(eye), who])
first = desk_found["entry"][0]["resource"]["id"]
desk_booked = call(DESK, "$book", [reference(first), who])["entry"][0]["resource"]
assert ext(desk_booked, "urn:fascicolo:booking-channel")["valueCode"] == "desk", desk_booked

# Anna cancels the ultrasound through $book with the appointment's status cancelled
cancel = dict(stored)
cancel["status"] = "cancelled"
out = call(ANNA, "$book", [{"name": "appointment-resource", "resource": cancel}])
assert out["entry"][0]["resource"]["status"] == "cancelled"
assert get(ANNA, booked["slot"][0]["reference"])["status"] == "free"
print(f"booking: $find ({len(proposed)} options), $hold, $book, 409 on a second booking, the desk's booking, a cancellation: all strict R4")
