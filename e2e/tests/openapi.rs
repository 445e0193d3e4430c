//! The API against its own document: a daemon with a small stack is called on every route
//! `GET /openapi.json` describes (reads, writes with valid bodies, refusals, the NDJSON and
//! server-sent-event streams), and each answer's status must be documented for its operation
//! and its JSON body (a stream's lines, one by one) valid against that answer's schema.

use capstan_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::Command;
use std::time::Duration;

/// The served document, and the operations the test has checked an answer of.
struct Contract {
    doc: Value,
    checked: BTreeSet<(String, String)>,
}

impl Contract {
    fn fetch(d: &Daemon) -> Contract {
        let resp = d.api().get(format!("{API}/openapi.json")).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let doc: Value = resp.json().unwrap();
        assert_eq!(doc["openapi"], "3.1.0", "an OpenAPI 3.1 document");
        let mut contract = Contract {
            doc,
            checked: BTreeSet::new(),
        };
        let served = contract.doc.clone();
        contract.check_json("get", "/openapi.json", 200, "application/json", &served);
        contract
    }

    /// The documented answer of `method path` with `status` (the path as documented).
    fn answer(&self, method: &str, path: &str, status: u16) -> &Value {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let answer = &op["responses"][status.to_string()];
        assert!(
            answer.is_object(),
            "{method} {path} answered {status}, which its documentation does not list: {}",
            op["responses"]
        );
        answer
    }

    /// A validator of the schema that `content_type` of the answer has, its references
    /// resolved against the document's components.
    fn validator(&self, answer: &Value, content_type: &str) -> jsonschema::Validator {
        let schema = &answer["content"][content_type]["schema"];
        assert!(
            schema.is_object(),
            "no {content_type} schema in the answer: {answer}"
        );
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        jsonschema::draft202012::new(&root).expect("the document's schema compiles")
    }

    /// `body` is what `method path` answered with `status`, as `content_type`.
    fn check_json(&mut self, method: &str, path: &str, status: u16, ct: &str, body: &Value) {
        let answer = self.answer(method, path, status).clone();
        let validator = self.validator(&answer, ct);
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: the body breaks its schema: {errors:#?}\n{body:#}"
        );
        self.checked.insert((method.into(), path.into()));
    }

    /// Checks a whole answer: its status documented, and its body (JSON, or text as a JSON
    /// string) valid against the schema of its content type. Returns the body.
    fn check(&mut self, method: &str, path: &str, resp: reqwest::blocking::Response) -> Value {
        let status = resp.status().as_u16();
        let ct = content_type(&resp);
        let text = resp.text().unwrap();
        let answer = self.answer(method, path, status).clone();
        if answer.get("content").is_none() {
            assert!(text.is_empty(), "{method} {path} {status}: a body: {text}");
            self.checked.insert((method.into(), path.into()));
            return Value::Null;
        }
        let documented = answer["content"].as_object().unwrap();
        let ct = documented
            .keys()
            .find(|k| *k == &ct || ct.starts_with(&format!("{k};")))
            .unwrap_or_else(|| panic!("{method} {path} {status}: {ct} is not documented"))
            .clone();
        let body = if ct.starts_with("application/json") {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        } else {
            Value::String(text)
        };
        self.check_json(method, path, status, &ct, &body);
        body
    }

    /// Checks a streamed answer: every NDJSON line against the documented item schema.
    fn check_ndjson(
        &mut self,
        method: &str,
        path: &str,
        resp: reqwest::blocking::Response,
    ) -> Vec<Value> {
        let status = resp.status().as_u16();
        if status != 200 {
            self.check(method, path, resp);
            return vec![];
        }
        assert_eq!(content_type(&resp), "application/x-ndjson");
        let mut lines = vec![];
        for line in BufReader::new(resp).lines() {
            let line: Value = serde_json::from_str(&line.unwrap()).unwrap();
            self.check_json(method, path, 200, "application/x-ndjson", &line);
            lines.push(line);
        }
        assert!(!lines.is_empty(), "{method} {path}: no line");
        lines
    }

    /// Every operation of the document, as (method, path).
    fn operations(&self) -> BTreeSet<(String, String)> {
        let paths = self.doc["paths"].as_object().unwrap();
        let mut ops = BTreeSet::new();
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "patch"] {
                if item.get(method).is_some() {
                    ops.insert((method.to_string(), path.clone()));
                }
            }
        }
        ops
    }
}

fn content_type(resp: &reqwest::blocking::Response) -> String {
    (resp.headers().get("content-type"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn stack_yaml(image: &str) -> String {
    format!("services:\n  web:\n    image: {image}\n    stop_grace_period: 1s\n")
}

/// Removes the images a test built, by the stack label the daemon puts on them.
struct BuiltImages(String);

impl Drop for BuiltImages {
    fn drop(&mut self) {
        let filter = format!("label=capstan.build.stack={}", self.0);
        let ids = docker(&["images", "-q", "--filter", &filter]);
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
    }
}

#[test]
fn every_route_answers_as_the_served_document_says() {
    preflight();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let h = Harness::start_with("openapi", &["--listen", &listen]);
    let _built = BuiltImages(h.s.name.clone());
    let mut c = Contract::fetch(&h.d);
    probes(&h.d, &mut c);
    stacks(&h, &mut c);
    services(&h, &mut c);
    rollouts(&h, &mut c);
    streams(&h, &mut c);
    tokens(&h, &format!("http://{listen}"), &mut c);
    builds(&h, &mut c);
    let api = h.d.api();
    let url = format!("{API}/v1/stacks/{}", h.s.name);
    c.check(
        "delete",
        "/v1/stacks/{stack}",
        api.delete(url).send().unwrap(),
    );
    let missed: Vec<_> = c.operations().difference(&c.checked).cloned().collect();
    assert!(missed.is_empty(), "operations never called: {missed:?}");
}

fn probes(d: &Daemon, c: &mut Contract) {
    let api = d.api();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = api.get(format!("{API}{path}")).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        c.check("get", path, resp);
    }
    let leader = api.get(format!("{API}/v1/leader")).send().unwrap();
    c.check("get", "/v1/leader", leader);
    let traefik = api.get(format!("{API}/v1/traefik")).send().unwrap();
    c.check("get", "/v1/traefik", traefik);
}

fn stacks(h: &Harness, c: &mut Contract) {
    let (api, name) = (h.d.api(), &h.s.name);
    let url = format!("{API}/v1/stacks/{name}");
    let put = "/v1/stacks/{stack}";
    let dry = api
        .put(&url)
        .query(&[("dryRun", "true")])
        .body(stack_yaml(IMAGE));
    assert_eq!(c.check("put", put, dry.send().unwrap())["dryRun"], true);
    let applied = c.check(
        "put",
        put,
        api.put(&url).body(stack_yaml(IMAGE)).send().unwrap(),
    );
    assert_eq!(applied["services"]["web"], "created");
    let invalid = api
        .put(&url)
        .body("services: {web: {imgae: x}}")
        .send()
        .unwrap();
    assert_eq!(
        c.check("put", put, invalid)["details"][0]["field"],
        "services.web.imgae"
    );
    let stale = api
        .put(&url)
        .query(&[("resourceVersion", "1")])
        .body(stack_yaml(IMAGE));
    c.check("put", put, stale.send().unwrap());
    wait_until(Duration::from_secs(60), "web to converge", || {
        h.d.converged(name, "web", 1)
    });
    c.check(
        "get",
        "/v1/stacks",
        api.get(format!("{API}/v1/stacks")).send().unwrap(),
    );
    c.check("get", put, api.get(&url).send().unwrap());
    let missing = api
        .get(format!("{API}/v1/stacks/{name}-none"))
        .send()
        .unwrap();
    c.check("get", put, missing);
    let diff = api.post(format!("{url}/diff")).body(stack_yaml(IMAGE_V2));
    let changes = c.check("post", "/v1/stacks/{stack}/diff", diff.send().unwrap());
    assert!(changes["web"].is_object(), "{changes}");
    let bad = api.post(format!("{url}/diff")).body("services: [");
    c.check("post", "/v1/stacks/{stack}/diff", bad.send().unwrap());
}

fn services(h: &Harness, c: &mut Contract) {
    let (api, name) = (h.d.api(), &h.s.name);
    let svc = format!("{API}/v1/stacks/{name}/services/web");
    let path = "/v1/stacks/{stack}/services/{service}";
    c.check("get", path, api.get(&svc).send().unwrap());
    let missing = api.get(format!("{svc}-none")).send().unwrap();
    c.check("get", path, missing);
    let list = api
        .get(format!("{API}/v1/services"))
        .query(&[("stack", name)]);
    c.check("get", "/v1/services", list.send().unwrap());
    let scale = format!("{path}/scale");
    let one = api
        .put(format!("{svc}/scale"))
        .json(&json!({"replicas": 1}));
    assert_eq!(c.check("put", &scale, one.send().unwrap())["replicas"], 1);
    let stale = (api.put(format!("{svc}/scale")))
        .query(&[("resourceVersion", "1")])
        .json(&json!({"replicas": 1}));
    c.check("put", &scale, stale.send().unwrap());
    let wrong = api
        .put(format!("{svc}/scale"))
        .json(&json!({"replicas": "many"}));
    c.check("put", &scale, wrong.send().unwrap());
    let endpoints = format!("{path}/endpoints");
    c.check(
        "get",
        &endpoints,
        api.get(format!("{svc}/endpoints")).send().unwrap(),
    );
    let watch = (h.d.api_without_timeout().get(format!("{svc}/endpoints")))
        .query(&[("watch", "true")])
        .send()
        .unwrap();
    assert_eq!(content_type(&watch), "text/event-stream");
    let data = BufReader::new(watch)
        .lines()
        .map(Result::unwrap)
        .find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string()))
        .expect("a first event");
    let first: Value = serde_json::from_str(&data).unwrap();
    c.check_json("get", &endpoints, 200, "text/event-stream", &first);
}

fn rollouts(h: &Harness, c: &mut Contract) {
    let (api, name) = (h.d.api(), &h.s.name);
    let svc = format!("{API}/v1/stacks/{name}/services/web");
    let rollout = "/v1/stacks/{stack}/services/{service}/rollout/{verb}";
    for verb in ["pause", "resume", "restart", "sideways"] {
        let resp = api.post(format!("{svc}/rollout/{verb}")).send().unwrap();
        c.check("post", rollout, resp);
    }
    let history = "/v1/stacks/{stack}/services/{service}/history";
    let revisions = c.check(
        "get",
        history,
        api.get(format!("{svc}/history")).send().unwrap(),
    );
    assert!(revisions.as_array().unwrap().len() >= 2, "{revisions}");
    let undo = "/v1/stacks/{stack}/services/{service}/undo";
    c.check(
        "post",
        undo,
        api.post(format!("{svc}/undo")).send().unwrap(),
    );
    let far = api
        .post(format!("{svc}/undo"))
        .query(&[("toRevision", "99")]);
    c.check("post", undo, far.send().unwrap());
}

fn streams(h: &Harness, c: &mut Contract) {
    let (api, name) = (h.d.api(), &h.s.name);
    let logs = "/v1/stacks/{stack}/logs";
    let url = format!("{API}/v1/stacks/{name}/logs");
    let read = api
        .get(&url)
        .query(&[("tail", "5"), ("timestamps", "true")]);
    c.check_ndjson("get", logs, read.send().unwrap());
    let bad = api.get(&url).query(&[("tail", "some")]).send().unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    c.check("get", logs, bad);
    let run = "/v1/stacks/{stack}/services/{service}/run";
    let url = format!("{API}/v1/stacks/{name}/services/web/run");
    let hello = json!({"command": ["echo", "hello"]});
    let records = c.check_ndjson("post", run, api.post(&url).json(&hello).send().unwrap());
    assert!(records.iter().any(|r| r["kind"] == "exit"), "{records:?}");
    let bad = api
        .post(&url)
        .json(&json!({"comand": ["echo"]}))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    c.check("post", run, bad);
}

fn tokens(h: &Harness, tcp: &str, c: &mut Contract) {
    let api = h.d.api();
    let create = api
        .post(format!("{API}/v1/tokens"))
        .json(&json!({"name": "reader", "role": "read"}));
    let created = c.check("post", "/v1/tokens", create.send().unwrap());
    let again = api
        .post(format!("{API}/v1/tokens"))
        .json(&json!({"name": "reader", "role": "read"}));
    c.check("post", "/v1/tokens", again.send().unwrap());
    c.check(
        "get",
        "/v1/tokens",
        api.get(format!("{API}/v1/tokens")).send().unwrap(),
    );
    let secret = created["token"].as_str().unwrap();
    let anonymous = reqwest::blocking::get(format!("{tcp}/v1/stacks")).unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    c.check("get", "/v1/stacks", anonymous);
    let reader = reqwest::blocking::Client::new();
    let url = format!("{tcp}/v1/stacks/{}", h.s.name);
    let refused = reader.put(url).bearer_auth(secret).body(stack_yaml(IMAGE));
    let refused = refused.send().unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    c.check("put", "/v1/stacks/{stack}", refused);
    let doc = reader
        .get(format!("{tcp}/openapi.json"))
        .bearer_auth(secret);
    let doc = doc.send().unwrap();
    assert_eq!(doc.status().as_u16(), 200, "a reader reads the document");
    c.check("get", "/openapi.json", doc);
    let revoke = "/v1/tokens/{name}";
    c.check(
        "delete",
        revoke,
        api.delete(format!("{API}/v1/tokens/reader"))
            .send()
            .unwrap(),
    );
    c.check(
        "delete",
        revoke,
        api.delete(format!("{API}/v1/tokens/reader"))
            .send()
            .unwrap(),
    );
}

fn builds(h: &Harness, c: &mut Contract) {
    let api = h.d.api();
    let name = &h.s.name;
    let tag = format!("capstan.local/{name}/web:0123456789abcdef");
    let image = api.get(format!("{API}/v1/images")).query(&[("tag", &tag)]);
    assert_eq!(
        c.check("get", "/v1/images", image.send().unwrap())["exists"],
        false
    );
    let foreign = api
        .get(format!("{API}/v1/images"))
        .query(&[("tag", "busybox")]);
    c.check("get", "/v1/images", foreign.send().unwrap());
    let options = json!({"stack": name, "service": "web", "tag": tag, "spec": {"context": "."}});
    let build = (api.post(format!("{API}/v1/builds")))
        .query(&[("options", options.to_string())])
        .body(context_tar());
    let events = c.check_ndjson("post", "/v1/builds", build.send().unwrap());
    assert!(
        events.iter().any(|e| e.get("built").is_some()),
        "{events:?}"
    );
    let bad = (api.post(format!("{API}/v1/builds")))
        .query(&[("options", "{}")])
        .body(Vec::new());
    c.check("post", "/v1/builds", bad.send().unwrap());
}

/// A build context: a Dockerfile on the demo image, as a tar.
fn context_tar() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("capstan-openapi-ctx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {IMAGE}\nLABEL capstan.test=openapi\n"),
    )
    .unwrap();
    let mut tar = Command::new("tar")
        .args(["-C", &dir.to_string_lossy(), "-cf", "-", "Dockerfile"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut bytes = vec![];
    tar.stdout.take().unwrap().read_to_end(&mut bytes).unwrap();
    assert!(tar.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// The check itself, without a daemon: answers that break their schema (a wrong type deep in
/// a referenced schema, a missing required field, an undocumented status) are caught.
#[test]
fn the_check_catches_a_body_that_breaks_its_schema() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut c = Contract {
        doc,
        checked: BTreeSet::new(),
    };
    let breaks = |c: &mut Contract, method: &str, path: &str, status: u16, body: Value| {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.check_json(method, path, status, "application/json", &body)
        }));
        assert!(
            caught.is_err(),
            "{method} {path} {status} let {body} through"
        );
    };
    let error = json!({"error": "no", "details": [{"field": "x", "reason": "y"}]});
    c.check_json("get", "/v1/stacks/{stack}", 404, "application/json", &error);
    breaks(
        &mut c,
        "get",
        "/v1/stacks/{stack}",
        404,
        json!({"details": []}),
    );
    let wrong = json!({"error": "no", "details": [{"field": 1, "reason": "y"}]});
    breaks(&mut c, "get", "/v1/stacks/{stack}", 404, wrong);
    breaks(&mut c, "get", "/v1/stacks/{stack}", 418, error);
    let leader = json!({"leader": null, "this": "a", "role": "follower", "cacheAgeSeconds": "old"});
    breaks(&mut c, "get", "/v1/leader", 200, leader);
}
