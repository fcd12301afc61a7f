//! The FHIR REST API over HTTP: interactions, versions, conditions, search, paging,
//! transactions, and bad input that must leave the store unchanged.

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn capability_statement_tells_the_truth() {
    let app = spawn_app().await;
    let r = app.get("/metadata").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["fhirVersion"], "4.0.1");
    let rest = &r.body["rest"][0];
    let patient = rest["resource"].as_array().unwrap().iter().find(|x| x["type"] == "Patient").unwrap();
    let params: Vec<&str> = patient["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(params.contains(&"birthdate") && params.contains(&"identifier") && params.contains(&"_id"));
    assert_eq!(patient["operation"][0]["name"], "everything");
    // `near` (special) is not claimed
    let loc = rest["resource"].as_array().unwrap().iter().find(|x| x["type"] == "Location").unwrap();
    assert!(!loc["searchParam"].as_array().unwrap().iter().any(|p| p["name"] == "near"));
    assert_eq!(rest["resource"].as_array().unwrap().len(), 146);
}

#[tokio::test]
async fn create_read_update_vread_delete_history() {
    let app = spawn_app().await;
    let mut p = patient("Esposito", "SPSGLI85D52F205X");
    p["extension"] = json!([{"url": "http://example.org/fhir/StructureDefinition/unknown-but-valid", "valueString": "kept"}]);
    let r = app.post("/Patient", p).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["etag"], "W/\"1\"");
    assert!(r.headers["location"].to_str().unwrap().ends_with(&format!("/Patient/{id}/_history/1")));
    assert!(r.headers.contains_key("last-modified"));
    assert!(uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 7));

    let g = app.get(&format!("/Patient/{id}")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["extension"][0]["valueString"], "kept");
    assert_eq!(g.body["meta"]["versionId"], "1");
    assert_eq!(g.body["name"][0]["family"], "Esposito");

    let mut upd = g.body.clone();
    upd["gender"] = json!("other");
    let u = app.send("PUT", &format!("/Patient/{id}"), Some(upd.clone()), &[("if-match", "W/\"1\"")]).await;
    assert_eq!(u.status, 200, "{}", u.body);
    assert_eq!(u.body["meta"]["versionId"], "2");
    // stale If-Match: refused, nothing written
    let before = app.versions().await;
    let stale = app.send("PUT", &format!("/Patient/{id}"), Some(upd), &[("if-match", "W/\"1\"")]).await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.body["resourceType"], "OperationOutcome");
    assert_eq!(app.versions().await, before);
    assert_eq!(app.get(&format!("/Patient/{id}")).await.body["meta"]["versionId"], "2");

    let v1 = app.get(&format!("/Patient/{id}/_history/1")).await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.body["gender"], "female");
    assert_eq!(app.get(&format!("/Patient/{id}/_history/9")).await.status, 404);

    // conditional read
    let nm = app.send("GET", &format!("/Patient/{id}"), None, &[("if-none-match", "W/\"2\"")]).await;
    assert_eq!(nm.status, 304);

    assert_eq!(app.send("DELETE", &format!("/Patient/{id}"), None, &[]).await.status, 204);
    let gone = app.get(&format!("/Patient/{id}")).await;
    assert_eq!(gone.status, 410);
    assert_eq!(app.count("Patient").await, 0);
    let h = app.get(&format!("/Patient/{id}/_history")).await;
    let methods: Vec<&str> = h.body["entry"].as_array().unwrap().iter().map(|e| e["request"]["method"].as_str().unwrap()).collect();
    assert_eq!(methods, vec!["DELETE", "PUT", "POST"]);
    assert!(h.body["entry"][0].get("resource").is_none());
    assert_eq!(app.get("/Patient/does-not-exist").await.status, 404);
}

#[tokio::test]
async fn update_as_create_and_conditional_operations() {
    let app = spawn_app().await;
    let mut p = patient("Ricci", "RCCGLI85D52F205Y");
    p["id"] = json!("pat-ricci");
    assert_eq!(app.put("/Patient/pat-ricci", p.clone()).await.status, 201);
    assert_eq!(app.put("/Patient/pat-ricci", p.clone()).await.status, 200);
    // id mismatch is refused
    assert_eq!(app.put("/Patient/other-id", p).await.status, 422);

    // conditional create: the second one finds the first
    let q = "identifier=http://hl7.it/sid/codiceFiscale|CNTGLI85D52F205Z";
    let c1 = app.send("POST", "/Patient", Some(patient("Conti", "CNTGLI85D52F205Z")), &[("if-none-exist", q)]).await;
    assert_eq!(c1.status, 201);
    let c2 = app.send("POST", "/Patient", Some(patient("Conti", "CNTGLI85D52F205Z")), &[("if-none-exist", q)]).await;
    assert_eq!(c2.status, 200);
    assert_eq!(c1.body["id"], c2.body["id"]);
    assert_eq!(app.count("Patient").await, 2);

    // conditional update: creates, then updates the same one
    let cu = app.put("/Patient?identifier=http://hl7.it/sid/codiceFiscale|MRNGLI85D52F205W", patient("Marino", "MRNGLI85D52F205W")).await;
    assert_eq!(cu.status, 201);
    let mut again = patient("Marino-Bruno", "MRNGLI85D52F205W");
    again["id"] = cu.body["id"].clone();
    let cu2 = app.put("/Patient?identifier=http://hl7.it/sid/codiceFiscale|MRNGLI85D52F205W", again).await;
    assert_eq!(cu2.status, 200);
    assert_eq!(cu2.body["meta"]["versionId"], "2");
    // ambiguous condition: 412
    let amb = app.put("/Patient?gender=female", patient("X", "X")).await;
    assert_eq!(amb.status, 412);
}

#[tokio::test]
async fn json_patch() {
    let app = spawn_app().await;
    let id = app.create(patient("Gallo", "GLLGLI85D52F205V")).await;
    let patch = json!([{"op": "replace", "path": "/gender", "value": "male"}, {"op": "add", "path": "/active", "value": true}]);
    let r = app.send("PATCH", &format!("/Patient/{id}"), Some(patch), &[("content-type", "application/json-patch+json")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["gender"], "male");
    assert_eq!(r.body["meta"]["versionId"], "2");
    let before = app.versions().await;
    let bad = json!([{"op": "replace", "path": "/nope/deep", "value": 1}]);
    let r = app.send("PATCH", &format!("/Patient/{id}"), Some(bad), &[("content-type", "application/json-patch+json")]).await;
    assert_eq!(r.status, 400);
    let invalid = json!([{"op": "replace", "path": "/gender", "value": "unknown-gender"}]);
    let r = app.send("PATCH", &format!("/Patient/{id}"), Some(invalid), &[("content-type", "application/json-patch+json")]).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["issue"][0]["expression"][0], "Patient.gender");
    assert_eq!(app.versions().await, before);
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let pid = app.create(patient("Fontana", "FNTGLI85D52F205U")).await;
    let before = app.versions().await;
    let put_path = format!("/Patient/{pid}");
    type Case<'a> = (&'a str, &'a str, Option<Value>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("POST", "/Patient", Some(Value::String("{not json".into())), vec![], 400, "not valid JSON"),
        (
            "POST",
            "/Patient",
            Some(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})),
            vec![],
            422,
            "does not match",
        ),
        ("POST", "/Patient", Some(json!({"resourceType": "Patient", "nickname": "x"})), vec![], 422, "unknown element 'nickname'"),
        ("POST", "/Patient", Some(json!({"resourceType": "Patient", "birthDate": "1985-02-30"})), vec![], 422, "not a valid date"),
        ("POST", "/Patient", Some(json!({"resourceType": "Patient", "gender": "f"})), vec![], 422, "not a valid code"),
        ("POST", "/Observation", Some(observation("missing-patient", "2345-7", 1.0, "2020-01-01")), vec![], 422, "does not exist"),
        ("POST", "/Patient", Some(patient("A", "B")), vec![("content-type", "text/plain")], 415, "application/fhir+json"),
        ("POST", "/Nonsense", Some(json!({"resourceType": "Nonsense"})), vec![], 404, "unknown resource type"),
        ("GET", "/Patient?shoe-size=42", None, vec![], 400, "unknown search parameter 'shoe-size'"),
        ("GET", "/Patient?birthdate=yesterday", None, vec![], 400, "not a valid date"),
        ("GET", "/Patient?_cursor=zz", None, vec![], 400, "cursor"),
        ("GET", "/Patient", None, vec![("accept", "application/fhir+xml")], 406, "JSON only"),
        ("PUT", &put_path, Some(patient("A", "B")), vec![], 422, "needs the resource's id"),
        ("GET", "/Patient/bad*id", None, vec![], 400, "not a valid FHIR id"),
    ];
    for (method, path, body, headers, status, text) in cases {
        let r = app.send(method, path, body, &headers).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{method} {path}");
        assert!(r.body.to_string().contains(text), "{method} {path}: expected '{text}' in {}", r.body);
    }
    // a body over the limit: 413 with an OperationOutcome, nothing stored
    let huge = format!(
        "{{\"resourceType\":\"Patient\",\"text\":{{\"status\":\"generated\",\"div\":\"<div>{}</div>\"}}}}",
        "x".repeat(65 * 1024 * 1024)
    );
    let r = app.send("POST", "/Patient", Some(Value::String(huge)), &[]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert!(r.body.to_string().contains("larger than the limit of 64 MiB"), "{}", r.body);
    // every problem of one resource is listed, each with its location
    let r = app.post("/Patient", json!({"resourceType": "Patient", "gender": "f", "birthDate": "x", "foo": 1})).await;
    let locs: Vec<&str> = r.body["issue"].as_array().unwrap().iter().map(|i| i["expression"][0].as_str().unwrap()).collect();
    assert_eq!(locs.len(), 3, "{}", r.body);
    assert!(locs.contains(&"Patient.gender") && locs.contains(&"Patient.birthDate") && locs.contains(&"Patient.foo"));
    assert_eq!(app.versions().await, before, "a refused request stored something");
    assert_eq!(app.count("Patient").await, 1);
}

#[tokio::test]
async fn search_paging_sort_include_elements() {
    let app = spawn_app().await;
    let org = app.create(json!({"resourceType": "Organization", "name": "ASST Grande Ospedale Metropolitano Niguarda"})).await;
    let mut p = patient("Romano", "RMNGLI85D52F205T");
    p["managingOrganization"] = json!({"reference": format!("Organization/{org}")});
    let pid = app.create(p).await;
    let other = app.create(patient("Colombo", "CLMGLI85D52F205S")).await;
    for i in 0..25 {
        app.create(observation(&pid, "2345-7", 80.0 + f64::from(i), &format!("2020-01-{:02}T08:00:00Z", i + 1))).await;
    }
    app.create(observation(&other, "2345-7", 99.0, "2021-01-01T08:00:00Z")).await;

    // paging: follow next links, no duplicates, nothing missed; accurate total
    let mut url = format!("/Observation?patient={pid}&_count=10&_sort=-date&_total=accurate");
    let mut seen = Vec::new();
    let mut dates = Vec::new();
    let mut pages = 0;
    loop {
        let r = app.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if pages == 0 {
            assert_eq!(r.body["total"], 25);
        }
        for e in r.body["entry"].as_array().unwrap() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
            dates.push(e["resource"]["effectiveDateTime"].as_str().unwrap().to_string());
        }
        pages += 1;
        match r.body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
    let mut sorted = dates.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(dates, sorted);

    // prefixes, quantity, _summary=count
    let r = app.get(&format!("/Observation?subject=Patient/{pid}&value-quantity=ge100&_summary=count")).await;
    assert_eq!(r.body["total"], 5);
    assert!(r.body.get("entry").is_none());
    // chain and _has
    assert_eq!(app.get("/Observation?subject:Patient.family=colombo").await.body["entry"].as_array().unwrap().len(), 1);
    assert_eq!(ids(&app.get("/Patient?_has:Observation:subject:value-quantity=ge104").await.body), vec![pid.clone()]);
    // _include and _revinclude
    let r = app.get(&format!("/Patient?_id={pid}&_include=Patient:organization&_revinclude=Observation:subject&_count=1")).await;
    let modes: Vec<(&str, &str)> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["resource"]["resourceType"].as_str().unwrap(), e["search"]["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(modes.iter().filter(|m| *m == &("Organization", "include")).count(), 1);
    assert_eq!(modes.iter().filter(|m| *m == &("Observation", "include")).count(), 25);
    assert_eq!(modes[0], ("Patient", "match"));
    // _elements
    let r = app.get(&format!("/Patient?_id={pid}&_elements=name")).await;
    let res = &r.body["entry"][0]["resource"];
    assert!(res.get("name").is_some() && res.get("gender").is_none());
    assert!(res["meta"]["tag"].to_string().contains("SUBSETTED"));
    // _summary=true keeps summary elements only (Patient.name yes, Patient.contact no)
    let mut with_contact = patient("Sommario", "SMMGLI85D52F205L");
    with_contact["contact"] = json!([{"name": {"family": "Parente"}}]);
    with_contact["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Sommario</div>"});
    let sid = app.create(with_contact).await;
    let r = app.get(&format!("/Patient?_id={sid}&_summary=true")).await;
    let res = &r.body["entry"][0]["resource"];
    assert!(res.get("name").is_some() && res.get("birthDate").is_some(), "{res}");
    assert!(res.get("contact").is_none() && res.get("text").is_none(), "{res}");
    assert!(res["meta"]["tag"].to_string().contains("SUBSETTED"));
    // POST _search
    let r = app.send("POST", "/Patient/_search", None, &[]).await;
    assert_eq!(r.status, 415);
    let r = app
        .client
        .post(format!("{}/Patient/_search", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .bearer_auth(&app.token)
        .body("family=romano")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(ids(&b), vec![pid.clone()]);
    // $everything: the compartment plus the organization it references
    let r = app.get(&format!("/Patient/{pid}/$everything?_count=100")).await;
    let types: Vec<&str> = r.body["entry"].as_array().unwrap().iter().map(|e| e["resource"]["resourceType"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "Observation").count(), 25);
    assert!(types.contains(&"Patient") && types.contains(&"Organization"));
    assert!(!ids(&r.body).contains(&other), "another patient's data leaked into $everything");
}

#[tokio::test]
async fn transaction_resolves_references_and_is_all_or_nothing() {
    let app = spawn_app().await;
    let existing = app.create(patient("Greco", "GRCGLI85D52F205R")).await;
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": patient("Bruno", "BRNGLI85D52F205Q"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
         "resource": observation("x", "2345-7", 97.0, "2024-02-01T10:00:00+01:00"),
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "peso"},
            "subject": {"reference": "Patient?identifier=http://hl7.it/sid/codiceFiscale|GRCGLI85D52F205R"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let mut tx = tx;
    tx["entry"][1]["resource"]["subject"]["reference"] = json!("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a");
    let r = app.post("", tx).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "transaction-response");
    let entries = r.body["entry"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["response"]["status"] == "201 Created"));
    let new_patient = entries[0]["resource"]["id"].as_str().unwrap();
    assert_eq!(entries[1]["resource"]["subject"]["reference"], format!("Patient/{new_patient}"));
    assert_eq!(entries[2]["resource"]["subject"]["reference"], format!("Patient/{existing}"));

    // one bad entry: nothing from the transaction is stored
    let before = app.versions().await;
    let bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0d2a9d6f-7f62-4c2f-8d4e-3f1b8d6a1111", "resource": patient("Valid", "VLDGLI85D52F205P"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "done", "code": {"text": "x"}}, "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:not-in-bundle"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/nobody"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let r = app.post("", bad).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let text = r.body.to_string();
    assert!(text.contains("Bundle.entry[1].resource.status"), "{text}");
    assert!(text.contains("urn:uuid:not-in-bundle"), "{text}");
    assert!(text.contains("Patient/nobody"), "{text}");
    assert_eq!(app.versions().await, before);
    assert!(ids(&app.get("/Patient?family=valid").await.body).is_empty());

    // a conditional reference without criteria names nothing, even if one patient would "match"
    let solo = spawn_app().await;
    solo.create(patient("Unico", "NCUGLI85D52F205G")).await;
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient?"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": patient("Doppio", "DPPGLI85D52F205F"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": ""}}
    ]});
    let r = solo.post("", tx).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.to_string().contains("'Patient?' does not match exactly one resource"), "{}", r.body);
    assert!(r.body.to_string().contains("has no search criteria"), "{}", r.body);
    assert_eq!(solo.count("Observation").await, 0);
    assert_eq!(solo.count("Patient").await, 1);

    // version conflict inside a transaction
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": existing, "gender": "male"}, "request": {"method": "PUT", "url": format!("Patient/{existing}"), "ifMatch": "W/\"3\""}}
    ]});
    assert_eq!(app.post("", tx).await.status, 422);
    assert_eq!(app.versions().await, before);
}

#[tokio::test]
async fn searches_by_patient_find_resources_filed_under_another_patient() {
    // An appointment with two patients is filed under the first; a search for the second must
    // still find it (Appointment's actor list does not decide the key alone).
    let app = spawn_app().await;
    let a = app.create(patient("Primo", "PRMGLI85D52F205K")).await;
    let b = app.create(patient("Secondo", "SCNGLI85D52F205J")).await;
    let appt = json!({"resourceType": "Appointment", "status": "booked", "participant": [
        {"actor": {"reference": format!("Patient/{a}")}, "status": "accepted"},
        {"actor": {"reference": format!("Patient/{b}")}, "status": "accepted"}]});
    let id = app.create(appt).await;
    assert_eq!(ids(&app.get(&format!("/Appointment?patient={b}")).await.body), vec![id.clone()]);
    assert_eq!(ids(&app.get(&format!("/Appointment?actor=Patient/{b}")).await.body), vec![id.clone()]);
    assert_eq!(ids(&app.get(&format!("/Appointment?patient={a}")).await.body), vec![id]);
    // Coverage: filed under the policy holder, found by beneficiary
    let cov = json!({"resourceType": "Coverage", "status": "active", "policyHolder": {"reference": format!("Patient/{a}")},
        "beneficiary": {"reference": format!("Patient/{b}")}, "payor": [{"reference": format!("Patient/{a}")}]});
    let cid = app.create(cov).await;
    assert_eq!(ids(&app.get(&format!("/Coverage?patient={b}")).await.body), vec![cid.clone()]);
    assert_eq!(ids(&app.get(&format!("/Coverage?beneficiary=Patient/{b}")).await.body), vec![cid]);
}

#[tokio::test]
async fn include_and_revinclude_iterate() {
    let app = spawn_app().await;
    let org = app.create(json!({"resourceType": "Organization", "name": "ASST Spedali Civili"})).await;
    let pid = app.create(patient("Rinaldi", "RNLGLI85D52F205H")).await;
    let enc = app
        .create(json!({"resourceType": "Encounter", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient/{pid}")}, "serviceProvider": {"reference": format!("Organization/{org}")}}))
        .await;
    let mut o = observation(&pid, "2345-7", 90.0, "2024-05-01T09:00:00Z");
    o["encounter"] = json!({"reference": format!("Encounter/{enc}")});
    let oid = app.create(o).await;
    // without :iterate the organization (two hops away) is not included
    let r = app.get(&format!("/Observation?_id={oid}&_include=Observation:encounter&_include=Encounter:service-provider")).await;
    let got: Vec<String> = ids(&r.body);
    assert!(got.contains(&enc) && !got.contains(&org), "{got:?}");
    let r = app.get(&format!("/Observation?_id={oid}&_include=Observation:encounter&_include:iterate=Encounter:service-provider")).await;
    let got: Vec<String> = ids(&r.body);
    assert!(got.contains(&enc) && got.contains(&org), "{got:?}");
    // revinclude iterate: patient <- encounter <- observation
    let r = app.get(&format!("/Patient?_id={pid}&_revinclude=Encounter:subject&_revinclude:iterate=Observation:encounter")).await;
    let got: Vec<String> = ids(&r.body);
    assert!(got.contains(&enc) && got.contains(&oid), "{got:?}");
    let r = app.get(&format!("/Patient?_id={pid}&_revinclude=Encounter:subject&_revinclude=Observation:encounter")).await;
    assert!(!ids(&r.body).contains(&oid));
}

#[tokio::test]
async fn batch_reports_each_entry() {
    let app = spawn_app().await;
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("Lombardi", "LMBGLI85D52F205O"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "nope"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?family=lombardi"}},
        {"request": {"method": "GET", "url": "Patient/missing"}}
    ]});
    let r = app.post("", b).await;
    assert_eq!(r.status, 200);
    let st: Vec<&str> = r.body["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap()).collect();
    assert_eq!(st, vec!["201 Created", "422", "200 OK", "404"]);
    assert_eq!(r.body["entry"][2]["resource"]["entry"].as_array().unwrap().len(), 1);
    assert_eq!(app.count("Patient").await, 1);
}

#[tokio::test]
async fn history_type_and_system_with_since() {
    let app = spawn_app().await;
    let a = app.create(patient("Costa", "CSTGLI85D52F205N")).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mid = fascicolo_fhir::datetime::format_instant(fascicolo_fhir::datetime::now_ms());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let b = app.create(patient("Giordano", "GRDGLI85D52F205M")).await;
    app.create(json!({"resourceType": "Organization", "name": "ATS Milano"})).await;
    let h = app.get("/Patient/_history").await;
    assert_eq!(ids(&h.body), vec![b.clone(), a.clone()]);
    let h = app.get(&format!("/_history?_since={mid}")).await;
    // the platform client's accesses are in the access log (one entry for creating b, one per
    // record for reading the Patient history above), which is not part of the history
    let types: Vec<&str> = h.body["entry"].as_array().unwrap().iter().map(|e| e["resource"]["resourceType"].as_str().unwrap()).collect();
    assert_eq!(types, ["Organization", "Patient"], "{types:?}");
    let log = app.get(&format!("/AuditEvent?_lastUpdated=ge{mid}&_count=100")).await;
    assert_eq!(log.status, 200, "{}", log.body);
    let logged: Vec<&str> = log.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["resource"]["entity"].as_array().unwrap().iter())
        .filter_map(|x| x["what"]["reference"].as_str())
        .collect();
    // b: created, in the Patient history, in the system history; a: in the Patient history
    assert_eq!(logged.iter().filter(|r| **r == format!("Patient/{b}")).count(), 3, "{logged:?}");
    assert_eq!(logged.iter().filter(|r| **r == format!("Patient/{a}")).count(), 1, "{logged:?}");
    let h = app.get("/Patient/_history?_count=1").await;
    let next = h.body["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"].as_str().unwrap().to_string();
    let h2 = app.get(&next).await;
    assert_eq!(ids(&h2.body), vec![a]);
}

#[tokio::test]
async fn health_ready_metrics() {
    let app = spawn_app().await;
    let c = &app.client;
    assert_eq!(c.get(format!("{}/healthz", app.root)).send().await.unwrap().status(), 200);
    let home = c.get(format!("{}/", app.root)).send().await.unwrap().text().await.unwrap();
    assert!(
        home.contains("lang=\"it\"")
            && home.contains("Ambiente dimostrativo")
            && home.contains("/fhir/r4/metadata")
            && home.contains("/auth/login")
    );
    assert_eq!(c.get(format!("{}/readyz", app.root)).send().await.unwrap().status(), 200);
    app.get("/metadata").await;
    app.get("/Patient/unknown").await;
    let m = c.get(format!("{}/metrics", app.root)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("fascicolo_http_requests_total{interaction=\"capabilities\",method=\"GET\",status=\"200\"} 1"), "{m}");
    assert!(m.contains("interaction=\"read\",method=\"GET\",status=\"404\""), "{m}");
    assert!(!m.contains("unknown"), "ids must not appear in metrics");
}

/// A page of large resources ends early with a next link (the page's resources are bounded in
/// bytes, `limits::PAGE_BYTES`), and following the links gives every match once.
#[tokio::test]
async fn a_page_of_large_resources_is_bounded_in_bytes_and_paging_gives_every_match_once() {
    let app = spawn_app().await;
    let data = "QUJD".repeat(1024 * 1024); // 4 MiB of base64 each
    let mut made = std::collections::BTreeSet::new();
    for _ in 0..6 {
        made.insert(app.create(json!({"resourceType": "Binary", "contentType": "application/pdf", "data": data})).await);
    }
    let first = app.get("/Binary?_count=100").await;
    assert_eq!(first.status, 200);
    let n = first.body["entry"].as_array().map_or(0, Vec::len);
    assert!((1..=4).contains(&n), "a page holds at most 16 MiB of resources: {n} of 4 MiB each");
    let mut seen = std::collections::BTreeSet::new();
    let mut page = first.body;
    let mut pages = 0;
    loop {
        pages += 1;
        for id in ids(&page) {
            assert!(seen.insert(id.clone()), "Binary/{id} on two pages");
        }
        let next = page["link"].as_array().and_then(|l| l.iter().find(|l| l["relation"] == "next")).and_then(|l| l["url"].as_str());
        let Some(next) = next.map(String::from) else { break };
        page = app.get(&next).await.body;
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(seen, made, "every match once");
    assert!(pages >= 2);
}
