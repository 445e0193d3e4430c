//! Applies that name no resourceVersion ask for last-writer-wins, as `kubectl apply` gives
//! it: twenty of them racing over the socket all land (the server retries its
//! compare-and-swap), and the stack ends as one of them.

use capstan_e2e::*;
use std::sync::{Arc, Barrier};

/// A stack of two services without replicas (no containers), `web`'s environment saying `i`.
fn spec(i: usize) -> String {
    format!(
        "services:\n  web: {{image: \"{IMAGE}\", environment: {{V: \"{i}\"}}, deploy: {{replicas: 0}}}}\n  db: {{image: \"{IMAGE}\", deploy: {{replicas: 0}}}}\n"
    )
}

#[test]
fn twenty_racing_puts_without_a_resource_version_all_succeed_and_one_of_them_stands() {
    let h = Harness::start("lww");
    let name = h.s.name.clone();
    let first =
        h.d.api()
            .put(format!("{API}/v1/stacks/{name}"))
            .body(spec(0));
    assert_eq!(first.send().unwrap().status().as_u16(), 200);

    let start = Arc::new(Barrier::new(20));
    let racers: Vec<_> = (1..=20)
        .map(|i| {
            let (client, name, start) = (h.d.api(), name.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let resp = (client.put(format!("{API}/v1/stacks/{name}")).body(spec(i)))
                    .send()
                    .unwrap_or_else(|e| panic!("PUT: {e}"));
                (i, resp.status().as_u16(), resp.text().unwrap_or_default())
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let failed: Vec<_> = results.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "every PUT is a 200: {failed:?}");

    let view: serde_json::Value = (h.d.api())
        .get(format!("{API}/v1/stacks/{name}/services/web"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let v = view["spec"]["environment"]["V"]
        .as_str()
        .unwrap_or_default();
    let v: usize = v.parse().unwrap_or_else(|_| panic!("{view}"));
    assert!(
        (1..=20).contains(&v),
        "the stack is one of the racers': {view}"
    );
}
