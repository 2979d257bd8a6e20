//! Resource limits per namespace through the real kubectl: LimitRanges' defaults in the
//! stored pod, their bounds refused with upstream's messages, and invalid LimitRanges refused
//! with field paths.

use crate::support::Server;

fn apply(server: &Server, dir: &std::path::Path, name: &str, yaml: &str) -> Result<String, String> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    server.kubectl(&["apply", "-f", file.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_a_namespaces_pods() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--disable-scheduler",
    ])
    .await;
    server.kubectl(&["create", "namespace", "team"]).unwrap();
    apply(
        &server,
        dir.path(),
        "limits",
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\n  namespace: team\nspec:\n  limits:\n  - type: Container\n    max: {memory: 512Mi}\n    min: {memory: 16Mi}\n    defaultRequest: {memory: 64Mi}\n    maxLimitRequestRatio: {memory: \"8\"}\n  - type: Pod\n    max: {memory: 1Gi}\n",
    )
    .unwrap();
    // The defaults LimitRange gives an item: the max is the default limit.
    let stored = server
        .kubectl(&[
            "get",
            "limitrange",
            "limits",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.limits[0].default.memory}",
        ])
        .unwrap();
    assert_eq!(stored, "512Mi");

    // A pod that sets nothing gets the defaults, and says so.
    server
        .kubectl(&[
            "run",
            "plain",
            "-n",
            "team",
            "--image=registry.invalid/app:v1",
        ])
        .unwrap();
    let pod: serde_json::Value = serde_json::from_str(
        &server
            .kubectl(&["get", "pod", "plain", "-n", "team", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["memory"], "512Mi", "{pod:#}");
    assert_eq!(resources["requests"]["memory"], "64Mi", "{pod:#}");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: memory request for container plain; memory limit for container plain"
    );

    // Over the max, under the min, a ratio too high: refused.
    let refused = |name: &str, resources: &str| {
        apply(
            &server,
            dir.path(),
            name,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team\nspec:\n  containers:\n  - name: a\n    image: registry.invalid/app:v1\n    resources: {resources}\n"
            ),
        )
        .unwrap_err()
    };
    let said = refused("big", "{limits: {memory: 1Gi}, requests: {memory: 512Mi}}");
    assert!(
        said.contains(r#"pods "big" is forbidden: maximum memory usage per Container is 512Mi, but limit is 1Gi"#),
        "{said}"
    );
    let said = refused("small", "{limits: {memory: 32Mi}, requests: {memory: 8Mi}}");
    assert!(
        said.contains(r#"pods "small" is forbidden: minimum memory usage per Container is 16Mi, but request is 8Mi"#),
        "{said}"
    );
    let said = refused(
        "spiky",
        "{limits: {memory: 512Mi}, requests: {memory: 32Mi}}",
    );
    assert!(
        said.contains(
            "memory max limit to request ratio per Container is 8, but provided ratio is 16.000000"
        ),
        "{said}"
    );
    assert!(
        server
            .kubectl(&["get", "pods", "-n", "team", "-o", "name"])
            .unwrap()
            .trim()
            == "pod/plain"
    );

    // An invalid LimitRange: a 422 with the field.
    let said = apply(
        &server,
        dir.path(),
        "bad",
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bad\n  namespace: team\nspec:\n  limits:\n  - type: Container\n    min: {cpu: \"2\"}\n    max: {cpu: \"1\"}\n",
    )
    .unwrap_err();
    assert!(
        said.contains(r#"spec.limits[0].min[cpu]: Invalid value: "2": min value 2 is greater than max value 1"#),
        "{said}"
    );
}
