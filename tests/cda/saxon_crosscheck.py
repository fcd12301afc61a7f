#!/usr/bin/env python3
"""Cross-check of the schematron verdicts: Fascicolo's engine against Saxon (PyPI `saxonche`).

For each official example and each mutated copy of it, this script runs the national schematron
chosen by the first templateId/@root twice:

* with `fascicolo validate` (the Rust interpreter over xee-xpath), and
* here, with an independent implementation of the same ISO Schematron semantics in Python over
  Saxon's XPath 3.1 processor: rules in order, each element handled by the first rule of the
  pattern whose context matches it, `let` values bound as Saxon variables (an XSLT for-each body
  executed item by item), asserts firing when false and reports when true.

It compares, per document, the verdict (valid or not) and the multiset of (kind, id, location)
firings. Exit status 0 only if every document agrees.

Usage: saxon_crosscheck.py FASCICOLO_BINARY SCHEMATRON_DIR EXAMPLES_DIR [WORK_DIR]
"""
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

from saxonche import PySaxonProcessor

SCH = "{http://purl.oclc.org/dsdl/schematron}"
XSL = "{http://www.w3.org/1999/XSL/Transform}"

LOCATION = (
    "'/' || string-join(for $e in ancestor-or-self::* return "
    "concat(local-name($e), '[', count($e/preceding-sibling::*[node-name(.) = node-name($e)]) + 1, ']'), '/')"
)

# Mutations: (name, pattern, replacement) applied once to the raw XML text.
MUTATIONS = [
    ("wrong-realm", r'<realmCode code="IT"\s*/>', '<realmCode code="FR"/>'),
    ("wrong-loinc", r'(<code\s+code=")([0-9]+-[0-9])("\s+codeSystem="2\.16\.840\.1\.113883\.6\.1")', r"\g<1>11111-1\g<3>"),
    ("no-patient-id", r"(<patientRole[^>]*>)\s*<id [^>]*/>", r"\g<1>"),
    ("wrong-confidentiality", r'<confidentialityCode code="[NRV]"', '<confidentialityCode code="X"'),
    ("broken-date", r'(<effectiveTime value=")[0-9]{8}', r"\g<1>2022-13-45"),
    ("no-language", r"<languageCode [^>]*/>", ""),
    ("no-author-time", r"(<author[^>]*>\s*)<time [^>]*/>", r"\g<1>"),
    ("no-custodian-name", r"(<representedCustodianOrganization>[\s\S]*?)<name>[^<]*</name>", r"\g<1>"),
    ("version-2-unrelated", r'<versionNumber value="1"\s*/>', '<versionNumber value="2"/>'),
    ("version-not-a-number", r'<versionNumber value="[0-9]+"\s*/>', '<versionNumber value="uno"/>'),
    ("other-xsi-type", r'xsi:type="CD"', 'xsi:type="CE"'),
    ("no-set-id", r"<setId [^>]*/>", ""),
    ("wrong-patient-id-root", r'(<patientRole[^>]*>\s*<id root=")2\.16\.840\.1\.113883\.2\.9\.4\.3\.2', r"\g<1>2.16.840.1.113883.2.9.4.3.9"),
]


def template_index(schematron_dir):
    index = {}
    for f in sorted(os.listdir(schematron_dir)):
        if not f.endswith(".sch"):
            continue
        text = open(os.path.join(schematron_dir, f), encoding="utf-8").read()
        m = re.search(r"templateId\[@root='(2\.16\.840\.1\.113883\.2\.9\.10\.1[0-9.]*)'\]", text)
        if m:
            index.setdefault(m.group(1), f)
    return index


def check_id(el):
    if el.get("id"):
        return el.get("id")
    return " ".join((el.text or "").split("|")[0].split())


class SaxonSchematron:
    def __init__(self, proc, path):
        self.proc = proc
        root = ET.parse(path).getroot()
        self.ns = [(n.get("prefix"), n.get("uri")) for n in root.findall(SCH + "ns")]
        self.patterns = []
        for p in root.findall(SCH + "pattern"):
            lets = [c for c in p if c.tag == SCH + "let"]
            rules = [c for c in p if c.tag == SCH + "rule"]
            self.patterns.append((lets, rules))

    def xpath(self):
        xp = self.proc.new_xpath_processor()
        for prefix, uri in self.ns:
            xp.declare_namespace(prefix, uri)
        return xp

    def bind(self, xp, let, node):
        """Evaluates a <let> with `node` as context and binds it as a Saxon parameter."""
        name = let.get("name")
        xp.set_context(xdm_item=node)
        if let.get("value") is not None:
            value = xp.evaluate(let.get("value"))
        else:
            value = self.proc.make_string_value(self.run_body(xp, let, node))
        xp.declare_variable(name)
        xp.set_parameter(name, value if value is not None else self.proc.empty_sequence())

    def run_body(self, xp, el, node):
        out = []
        for child in el:
            if child.tag == XSL + "for-each":
                xp.set_context(xdm_item=node)
                items = xp.evaluate(child.get("select"))
                for item in (items or []):
                    out.append(self.run_body(xp, child, item))
            elif child.tag in (XSL + "value-of", SCH + "value-of"):
                xp.set_context(xdm_item=node)
                v = xp.evaluate(child.get("select"))
                out.append(" ".join(i.string_value for i in (v or [])))
            if child.tail and child.tail.strip():
                out.append(child.tail)
        return "".join(out)

    def run(self, xml_path):
        doc = self.proc.parse_xml(xml_file_name=xml_path)
        firings = []
        for lets, rules in self.patterns:
            handled = set()
            for rule in rules:
                xp = self.xpath()
                for let in lets:  # pattern lets: evaluated on the document
                    self.bind(xp, let, doc)
                ctx = rule.get("context")
                query = ctx if ctx.startswith("/") else "//" + ctx
                xp.set_context(xdm_item=doc)
                nodes = xp.evaluate(query)
                for node in (nodes or []):
                    xp.set_context(xdm_item=node)
                    where = xp.evaluate_single(LOCATION).string_value
                    if where in handled:
                        continue
                    handled.add(where)
                    for child in rule:
                        if child.tag == SCH + "let":
                            self.bind(xp, child, node)
                            continue
                        kind = {SCH + "assert": "assert", SCH + "report": "report"}.get(child.tag)
                        if kind is None:
                            continue
                        xp.set_context(xdm_item=node)
                        try:
                            value = xp.effective_boolean_value(child.get("test"))
                            fired = (not value) if kind == "assert" else value
                        except Exception:  # an XPath error counts as a firing, as in the Rust engine
                            fired = True
                        if fired:
                            firings.append((kind, check_id(child), where))
        return firings


def mutate(text):
    yield "original", text
    for name, pattern, repl in MUTATIONS:
        new, n = re.subn(pattern, repl, text, count=1)
        if n:
            yield name, new


def main():
    binary, sch_dir, examples_dir = sys.argv[1:4]
    work = sys.argv[4] if len(sys.argv) > 4 else tempfile.mkdtemp(prefix="saxon-crosscheck-")
    os.makedirs(work, exist_ok=True)
    index = template_index(sch_dir)
    cases = []
    for f in sorted(os.listdir(examples_dir)):
        if not f.endswith(".xml"):
            continue
        text = open(os.path.join(examples_dir, f), encoding="utf-8").read()
        for name, variant in mutate(text):
            path = os.path.join(work, f"{f[:-4]}.{name}.xml")
            with open(path, "w", encoding="utf-8") as out:
                out.write(variant)
            cases.append(path)
    ours = {}
    run = subprocess.run([binary, "validate", *cases], capture_output=True, text=True)
    for line in run.stdout.splitlines():
        obj = json.loads(line)
        ours[obj["file"]] = obj
    disagreements = 0
    total_firings = 0
    with PySaxonProcessor(license=False) as proc:
        compiled = {}
        for path in cases:
            root_match = re.search(r'<templateId root="([0-9.]+)"', open(path, encoding="utf-8").read())
            sch = index.get(root_match.group(1)) if root_match else None
            if sch is None:
                print(f"SKIP {os.path.basename(path)}: no schematron")
                continue
            if sch not in compiled:
                compiled[sch] = SaxonSchematron(proc, os.path.join(sch_dir, sch))
            theirs = collections.Counter(compiled[sch].run(path))
            mine_obj = ours.get(path)
            if mine_obj is None:
                print(f"FAIL {os.path.basename(path)}: fascicolo printed nothing for it")
                disagreements += 1
                continue
            mine = collections.Counter(
                (p["id"] and ("assert" if p["severity"] == "error" else "report"), p["id"], p.get("location"))
                for p in mine_obj["problems"]
                if p["source"] == "schematron"
            )
            saxon_valid = not any(k == "assert" for (k, _, _) in theirs.elements())
            our_valid = not any(p["source"] == "schematron" and p["severity"] == "error" for p in mine_obj["problems"])
            total_firings += sum(theirs.values())
            if mine != theirs or saxon_valid != our_valid:
                disagreements += 1
                print(f"FAIL {os.path.basename(path)}")
                print("  only fascicolo:", sorted((mine - theirs).elements()))
                print("  only saxon:    ", sorted((theirs - mine).elements()))
            else:
                ids = sorted({i for (_, i, _) in theirs.elements()})
                print(f"ok   {os.path.basename(path)}: {'valid' if saxon_valid else 'invalid'}, {sum(theirs.values())} firings {ids}")
    print(f"{len(cases)} documents, {total_firings} firings compared, {disagreements} disagreements")
    sys.exit(1 if disagreements else 0)


if __name__ == "__main__":
    main()
