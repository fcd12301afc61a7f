#!/usr/bin/env python3
"""Build crates/fhir/data/r4-model.json from the official R4 package.

Usage: npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
       python3 tools/gen_r4_model.py package crates/fhir/data/r4-model.json

The output is a compact, derived form of the HL7 FHIR R4 (4.0.1) definitions (CC0-1.0):
- types: for every resource and complex datatype, its elements with cardinality, type codes,
  target resource types of references, and the value set of a *required* binding;
- valuesets: the codes of every required-binding value set that can be expanded from the
  package's own CodeSystems (whole-system includes and enumerated concepts);
- compartment: the Patient CompartmentDefinition (resource type -> search parameters).
Elements flagged isSummary carry "summary": true (for `_summary=true`).
"""
import glob, json, os, sys

src, out = sys.argv[1], sys.argv[2]
sds, vss, css = {}, {}, {}
compartment = {}
for f in glob.glob(os.path.join(src, "*.json")):
    base = os.path.basename(f)
    if not base.startswith(("StructureDefinition-", "ValueSet-", "CodeSystem-", "CompartmentDefinition-patient")):
        continue
    d = json.load(open(f))
    rt = d.get("resourceType")
    if rt == "StructureDefinition":
        sds[d["url"]] = d
    elif rt == "ValueSet":
        vss[d["url"]] = d
    elif rt == "CodeSystem":
        css[d["url"]] = d
    elif rt == "CompartmentDefinition":
        for r in d.get("resource", []):
            if r.get("param"):
                compartment[r["code"]] = r["param"]

def cs_codes(cs):
    acc = []
    def walk(concepts):
        for c in concepts or []:
            acc.append(c["code"])
            walk(c.get("concept"))
    walk(cs.get("concept"))
    return acc

def expand(url, seen=None):
    seen = seen or set()
    url = url.split("|")[0]
    if url in seen: return None
    seen.add(url)
    vs = vss.get(url)
    if vs is None: return None
    comp = vs.get("compose")
    if not comp:
        exp = vs.get("expansion", {}).get("contains")
        return [[c.get("system"), c["code"]] for c in exp] if exp else None
    if comp.get("exclude"): return None
    codes = []
    for inc in comp.get("include", []):
        if inc.get("filter"): return None
        system = inc.get("system")
        if inc.get("valueSet"):
            for u in inc["valueSet"]:
                sub = expand(u, seen)
                if sub is None: return None
                codes.extend(sub)
        if system is None: continue
        if inc.get("concept"):
            codes.extend([system, c["code"]] for c in inc["concept"])
        else:
            cs = css.get(system)
            if cs is None or cs.get("content") not in (None, "complete"): return None
            codes.extend([system, c] for c in cs_codes(cs))
    return codes

types, valuesets = {}, {}
for url, sd in sds.items():
    if sd.get("derivation") != "specialization" or sd.get("kind") not in ("resource", "complex-type"):
        continue
    if sd.get("abstract") and sd["type"] not in ("Resource", "DomainResource", "Element", "BackboneElement"):
        pass
    els = {}
    for e in sd["snapshot"]["element"]:
        path = e["path"]
        if "." not in path: continue
        tcodes, targets = [], []
        for t in e.get("type", []):
            code = t["code"]
            if code.startswith("http://hl7.org/fhirpath/System."):
                code = "System." + code.rsplit(".", 1)[1]
            tcodes.append(code)
            for tp in t.get("targetProfile", []):
                targets.append(tp.rsplit("/", 1)[1])
        b = e.get("binding")
        binding = None
        if b and b.get("strength") == "required" and b.get("valueSet"):
            binding = b["valueSet"].split("|")[0]
            if binding not in valuesets:
                codes = expand(binding)
                if codes is not None:
                    valuesets[binding] = codes
            if binding not in valuesets:
                binding = None
        el = {"min": e.get("min", 0), "max": e.get("max", "*"), "types": tcodes}
        if targets: el["targets"] = sorted(set(targets))
        if binding: el["binding"] = binding
        if e.get("contentReference"): el["ref"] = e["contentReference"].lstrip("#")
        if e.get("isSummary"): el["summary"] = True
        els[path] = el
    types[sd["type"]] = {"kind": sd["kind"], "abstract": bool(sd.get("abstract")), "base": (sd.get("baseDefinition") or "").rsplit("/", 1)[-1], "elements": els}

json.dump({"fhirVersion": "4.0.1", "source": "hl7.fhir.r4.examples@4.0.1 (CC0-1.0)", "types": types,
           "valuesets": valuesets, "compartment": compartment}, open(out, "w"), separators=(",", ":"), sort_keys=True)
print(len(types), "types,", len(valuesets), "value sets,", len(compartment), "compartment entries")
