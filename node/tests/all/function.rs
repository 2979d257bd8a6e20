//! Function containers on the real wasmtime runtime: the `function` guest (guests/function,
//! built by scripts/guests.sh), served on a loopback port of the test's network, with real
//! HTTP requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bosun_node::metrics::BUCKETS;
use bosun_node::runtime::wasmtime::{WasmtimeOptions, WasmtimeRuntime};
use bosun_node::runtime::{
    Artifact, Container, ContainerSpec, Error, PodNetwork, Runtime, Serving,
};

fn guest() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guests/target/wasm32-wasip2/release/function.wasm"
    );
    std::fs::read(path).expect("build the guests first: scripts/guests.sh")
}

struct Function {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    container: Arc<dyn Container>,
    url: String,
    _runtime: WasmtimeRuntime,
}

fn start(serving: Serving) -> Function {
    start_with(serving, None, None)
}

/// A function on `network` (none: no sockets), its outgoing HTTPS trusting `roots`.
fn start_with(
    serving: Serving,
    network: Option<PodNetwork>,
    roots: Option<rustls::RootCertStore>,
) -> Function {
    let dir = tempfile::tempdir().unwrap();
    let runtime = WasmtimeRuntime::new(WasmtimeOptions {
        max_instances: 16,
        max_memory_size: 64 << 20,
        epoch_tick: Duration::from_millis(5),
        tls_roots: roots.map(Arc::new),
        ..Default::default()
    })
    .unwrap();
    let port = serving.port;
    let log = dir.path().join("fn.log");
    let container = runtime
        .start(ContainerSpec {
            name: "fn".to_string(),
            artifact: Artifact::Wasm {
                bytes: Arc::from(guest()),
                digest: None,
            },
            args: vec!["fn".to_string()],
            env: vec![("POD_NAME".to_string(), "hello-pod".to_string())],
            mounts: Vec::new(),
            log: log.clone(),
            memory_limit: 48 << 20,
            cpu_limit_millis: None,
            network,
            serving,
        })
        .unwrap();
    Function {
        _dir: dir,
        log,
        container,
        url: format!("http://127.0.0.1:{port}"),
        _runtime: runtime,
    }
}

fn serving() -> Serving {
    Serving {
        port: bosun_testkit::free_port(),
        request_timeout: Duration::from_secs(2),
        concurrency: 2,
        queue: 3,
        max_body: 1024,
        required: false,
    }
}

/// A plain-HTTP client (reqwest is built without a default TLS provider).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_a_fresh_instance_and_bad_requests_do_not_end_the_function() {
    let f = start(serving());
    let (status, body) = get(&format!("{}/hello", f.url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"path":"/hello","pod":"hello-pod"}"#);
    for _ in 0..3 {
        assert_eq!(
            get(&format!("{}/counter", f.url)).await,
            (200, "1".to_string())
        );
    }
    for (path, expected) in [("/trap", 500), ("/oom", 500), ("/loop", 504)] {
        let started = Instant::now();
        let (status, body) = get(&format!("{}{path}", f.url)).await;
        assert_eq!(status, expected, "{path}: {body}");
        if path == "/loop" {
            let took = started.elapsed();
            assert!(
                took >= Duration::from_secs(2) && took < Duration::from_secs(10),
                "{took:?}"
            );
        }
        // The next request is served as if nothing happened.
        assert_eq!(
            get(&format!("{}/counter", f.url)).await.0,
            200,
            "after {path}"
        );
    }
    assert!(!f.container.is_finished());

    // A guest that dies in the middle of its body: the connection is cut, so the client never
    // takes the part that was written for a whole answer (whether the head reached it first
    // depends on timing), and the function goes on.
    let cut = async {
        let response = client()
            .get(format!("{}/stream-trap", f.url))
            .send()
            .await?;
        response.text().await
    };
    assert!(cut.await.is_err(), "a cut body reads as an error");
    assert_eq!(
        get(&format!("{}/counter", f.url)).await,
        (200, "1".to_string())
    );

    // Bodies: echoed when small, refused with 413 past the limit.
    let client = client();
    let echoed = client
        .post(format!("{}/echo", f.url))
        .body("ping")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.unwrap(), "ping");
    let large = client
        .post(format!("{}/echo", f.url))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);

    // Output of request instances goes to the container's log.
    assert_eq!(get(&format!("{}/print", f.url)).await.0, 200);
    let log = std::fs::read_to_string(&f.log).unwrap();
    assert!(log.contains("stdout F hello from a request"), "{log}");
    assert!(log.contains("stderr F and from its stderr"), "{log}");

    // With no pod network, outgoing requests are refused.
    let (status, body) = get(&format!("{}/fetch?url=http://127.0.0.1:1/", f.url)).await;
    assert_eq!(status, 502, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_limited_and_the_queue_overflows_to_503() {
    let f = start(serving());
    let client = client();
    let started = Instant::now();
    let requests = (0..20).map(|_| {
        let client = client.clone();
        let url = format!("{}/sleep?ms=1000", f.url);
        async move {
            let response = client.get(url).send().await.unwrap();
            let retry = response.headers().get("retry-after").cloned();
            (response.status().as_u16(), retry, started.elapsed())
        }
    });
    // What the function's stats say meanwhile, sampled as the autoscaler would read them.
    let stats = f.container.function_stats().expect("a function has stats");
    let sampled = stats.clone();
    let sampler = tokio::spawn(async move {
        let (mut in_flight, mut queued) = (0, 0);
        for _ in 0..300 {
            in_flight = in_flight.max(sampled.in_flight.load(Ordering::SeqCst));
            queued = queued.max(sampled.queued.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (in_flight, queued)
    });
    let answers = futures::future::join_all(requests).await;
    assert_eq!(sampler.await.unwrap(), (2, 3), "most in flight and queued");
    assert_eq!(stats.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(stats.queued.load(Ordering::SeqCst), 0);
    let by_class: Vec<u64> = stats
        .requests
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    assert_eq!(by_class, [0, 5, 0, 0, 15]);
    assert_eq!(stats.instances_created.load(Ordering::SeqCst), 5);
    let (queued, waited) = stats.queue_time.read();
    assert_eq!(
        queued[BUCKETS.len()],
        5,
        "the five served waited (or not) for a place"
    );
    assert!(waited >= 3.5, "three waited 1 s, 1 s and 2 s: {waited}");
    let (timed, _) = stats.duration.read();
    assert_eq!(timed[BUCKETS.len()], 20);
    let served: Vec<Duration> = answers
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, t)| *t)
        .collect();
    let refused = answers.iter().filter(|(s, _, _)| *s == 503).count();
    // Two at a time, three waiting: five served, the rest refused at once.
    assert_eq!(served.len(), 5, "{answers:?}");
    assert_eq!(refused, 15, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _, _)| *s == 503)
            .all(|(_, retry, _)| retry.is_some())
    );
    // Never more than two at once: five 1 s requests take three rounds.
    let last = served.iter().max().unwrap();
    assert!(*last >= Duration::from_millis(3000), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_the_memory_limit_and_one_that_would_overflow_it_waits() {
    // 48 MiB for the container: two requests holding 30 MiB each cannot live at once, so the
    // second's growth waits for the first to end, then goes on.
    let f = start(serving());
    let started = Instant::now();
    let hold = |_| {
        let url = format!("{}/hold?mb=30&ms=600", f.url);
        async move {
            let answer = get(&url).await;
            (answer, started.elapsed())
        }
    };
    let answers = futures::future::join_all((0..2).map(hold)).await;
    for ((status, body), _) in &answers {
        assert_eq!(
            (*status, body.as_str()),
            (200, "held 31457280"),
            "{answers:?}"
        );
    }
    let last = answers.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        last >= Duration::from_millis(1200),
        "one after the other: {answers:?}"
    );
    // One request alone over the limit cannot wait for anything: 500 at once.
    let (status, body) = get(&format!("{}/hold?mb=60&ms=0", f.url)).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("memory limit exceeded"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_function_finishes_requests_in_flight_then_ends() {
    let f = start(serving());
    let url = format!("{}/sleep?ms=600", f.url);
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    f.container.terminate();
    assert_eq!(slow.await.unwrap(), (200, "slept".to_string()));
    let exit = tokio::time::timeout(Duration::from_secs(5), f.container.wait())
        .await
        .expect("the function ends once its requests are done");
    assert_eq!(exit.reason, "Completed", "{exit:?}");
    assert!(asked.elapsed() < Duration::from_secs(5));
    // No longer listening.
    assert!(
        client()
            .get(format!("{}/counter", f.url))
            .send()
            .await
            .is_err()
    );
}

#[test]
fn a_component_that_is_neither_a_command_nor_a_function_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = WasmtimeRuntime::new(WasmtimeOptions::default()).unwrap();
    let empty =
        wat::parse_str(r#"(component (core module $m) (core instance (instantiate $m)))"#).unwrap();
    let error = runtime
        .start(ContainerSpec {
            name: "odd".to_string(),
            artifact: Artifact::Wasm {
                bytes: Arc::from(empty),
                digest: None,
            },
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            log: dir.path().join("odd.log"),
            memory_limit: 16 << 20,
            cpu_limit_millis: None,
            network: None,
            serving: Serving::default(),
        })
        .err()
        .expect("refused");
    assert!(matches!(error, Error::Invalid(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("neither wasi:cli/run"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_https_is_verified_against_the_trusted_authorities() {
    // An HTTPS server on loopback (which a pod may always reach), its certificate for
    // `localhost` signed by nothing but itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let tls = bosun_tls::server_config(
        &cert.cert.pem(),
        &cert.signing_key.serialize_pem(),
        bosun_tls::ClientCerts::None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route("/secret", axum::routing::get(async || "over TLS"));
    tokio::spawn(bosun_tls::serve(listener, tls, app, std::future::pending()));
    let network = || PodNetwork {
        netns: None,
        ip: std::net::Ipv4Addr::LOCALHOST,
        egress: false,
        namespace: "default".to_string(),
    };
    let fetch = |f: &Function| format!("{}/fetch?url=https://localhost:{port}/secret", f.url);

    // Trusting the server's certificate: the request goes through.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let trusting = start_with(serving(), Some(network()), Some(roots));
    assert_eq!(
        get(&fetch(&trusting)).await,
        (200, "200 over TLS".to_string())
    );

    // With the system's authorities only: refused, and the guest is told why.
    let wary = start_with(serving(), Some(network()), None);
    let (status, body) = get(&fetch(&wary)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TlsCertificateError"), "{body}");
}
