//! TLS with mutual authentication and the token, on loopback with real sockets: a secure
//! `LocalCluster` computes the seeds' headline (values move between workers over TLS); a worker
//! whose certificate another CA signed, an expired certificate, a plain connection to a TLS
//! scheduler and a wrong token are refused while the scheduler keeps serving the others.
//! Certificates are generated in the tests (rcgen, through `CertificateAuthority`).

use std::time::{Duration, SystemTime};

use kiln_array::random::RandomState;
use kiln_distributed::comm::CommError;
use kiln_distributed::{
    CertificateAuthority, Client, LocalCluster, SchedulerServer, Security, ServerConfig, TlsRole, WorkerConfig,
    WorkerMode, start_worker,
};
use kiln_graph::{Collection, ComputeError};
use kiln_local::LocalScheduler;
use kiln_protocol::AuthToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `Security` trusting `ca`, with a fresh certificate from `signer` for every role.
fn security(ca: &CertificateAuthority, signer: &CertificateAuthority) -> Security {
    let (cert, key) = signer.issue("kiln-test").unwrap();
    let mut security = Security::new().with_ca_pem(&ca.certificate_pem(), "test CA").unwrap();
    for role in [TlsRole::Scheduler, TlsRole::Worker, TlsRole::Client] {
        security = security.with_identity_pem(role, &cert, &key, "test certificate").unwrap();
    }
    security.with_require_encryption(true)
}

fn connection_message(result: Result<Client, ComputeError>) -> String {
    match result {
        Err(ComputeError::Connection { message, .. }) => message,
        Err(other) => panic!("expected a connection error, got {other}"),
        Ok(_) => panic!("the connection was accepted"),
    }
}

fn headline(n: usize) -> kiln_array::Array<f64> {
    let x = RandomState::new(5).random(&[n, n], [n / 3, n / 3]);
    (&x + &x.t() - &x.mean_axis(0)).std()
}

#[test]
fn a_secure_local_cluster_computes_the_array_headline() {
    let cluster = LocalCluster::builder()
        .workers(2)
        .threads_per_worker(1)
        .mode(WorkerMode::Threads)
        .secure(true)
        .start()
        .unwrap();
    assert!(cluster.address().starts_with("tls://127.0.0.1:"), "{}", cluster.address());
    let client = cluster.client().unwrap();
    // Both workers' data ports are TLS, so the transpose's blocks moved over TLS.
    assert!(client.workers().iter().all(|w| w.address.starts_with("tls://")), "{:?}", client.workers());
    let y = headline(600);
    let local = y.compute_on(&LocalScheduler::new()).unwrap().first().copied().unwrap();
    let remote = y.compute_on(&client).unwrap().first().copied().unwrap();
    assert!((local - remote).abs() <= 1e-9 * local.abs(), "{local} vs {remote}");
    // A client without the cluster's settings is refused.
    let plain = connection_message(Client::connect(&cluster.address()));
    assert!(plain.contains("no TLS settings"), "{plain}");
}

#[test]
fn a_worker_signed_by_another_ca_is_refused_and_the_scheduler_keeps_serving() {
    let rt = runtime();
    let ca = CertificateAuthority::new("cluster CA").unwrap();
    let stranger_ca = CertificateAuthority::new("some other CA").unwrap();
    let good = security(&ca, &ca);
    let server = rt
        .block_on(SchedulerServer::start("127.0.0.1:0", ServerConfig { security: good.clone(), ..Default::default() }))
        .unwrap();
    let address = server.url();
    assert!(address.starts_with("tls://"));

    // Its certificate chains to another CA (which it trusts): refused in the TLS handshake.
    let mut config = WorkerConfig::new(&address);
    config.security = security(&stranger_ca, &stranger_ca);
    config.nthreads = 1;
    let err = rt.block_on(start_worker(config)).err().expect("the stranger was accepted");
    assert!(matches!(err, CommError::Tls { .. }), "{err}");

    // A client certificate from the other CA, but trusting ours: refused too.
    let mixed = security(&ca, &stranger_ca);
    let message = connection_message(Client::connect_with(&address, &mixed));
    assert!(message.contains("TLS"), "{message}");

    // The scheduler still serves workers and clients with the right certificates.
    let mut config = WorkerConfig::new(&address);
    config.security = good.clone();
    config.nthreads = 1;
    let worker = rt.block_on(start_worker(config)).unwrap();
    let client = Client::connect_with(&address, &good).unwrap();
    client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
    assert_eq!(client.workers().len(), 1);
    let y = headline(90);
    assert!(y.compute_on(&client).unwrap().first().unwrap().is_finite());
    worker.close("test over");
    rt.block_on(worker.stopped());
    server.stop("test over");
}

#[test]
fn plain_tcp_to_a_tls_scheduler_is_refused_on_both_sides_with_a_clear_error() {
    let rt = runtime();
    let ca = CertificateAuthority::new("cluster CA").unwrap();
    let server = rt
        .block_on(SchedulerServer::start(
            "127.0.0.1:0",
            ServerConfig { security: security(&ca, &ca), ..Default::default() },
        ))
        .unwrap();
    let plain = format!("tcp://{}", server.address());
    // The listener answers a plain hello in plain words.
    let message = connection_message(Client::connect(&plain));
    assert!(message.contains("accepts only TLS connections: connect to tls://"), "{message}");
    // A process that requires encryption does not even try.
    let message = connection_message(Client::connect_with(&plain, &security(&ca, &ca)));
    assert!(message.contains("refusing a plain tcp:// connection"), "{message}");
    // And a TLS client reaching a plain listener is told what happened.
    let open = rt.block_on(SchedulerServer::start("127.0.0.1:0", ServerConfig::default())).unwrap();
    let message = connection_message(Client::connect_with(&format!("tls://{}", open.address()), &security(&ca, &ca)));
    assert!(message.contains("TLS"), "{message}");
    // The TLS scheduler keeps serving.
    assert!(Client::connect_with(&server.url(), &security(&ca, &ca)).is_ok());
    server.stop("test over");
    open.stop("test over");
}

#[test]
fn an_expired_certificate_is_refused_on_either_side() {
    let rt = runtime();
    let ca = CertificateAuthority::new("cluster CA").unwrap();
    let day = Duration::from_secs(86400);
    let (cert, key) = ca.issue_valid("expired", SystemTime::now() - 30 * day, SystemTime::now() - day).unwrap();
    let expired = Security::new()
        .with_ca_pem(&ca.certificate_pem(), "test CA")
        .unwrap()
        .with_identity_pem(TlsRole::Client, &cert, &key, "expired")
        .unwrap()
        .with_identity_pem(TlsRole::Scheduler, &cert, &key, "expired")
        .unwrap();
    let server = rt
        .block_on(SchedulerServer::start(
            "127.0.0.1:0",
            ServerConfig { security: security(&ca, &ca), ..Default::default() },
        ))
        .unwrap();
    // The client's certificate has expired: the scheduler refuses it.
    let message = connection_message(Client::connect_with(&server.url(), &expired));
    assert!(message.contains("TLS"), "{message}");
    // The scheduler's has: the client refuses it, naming the reason.
    let stale = rt
        .block_on(SchedulerServer::start("127.0.0.1:0", ServerConfig { security: expired, ..Default::default() }))
        .unwrap();
    let message = connection_message(Client::connect_with(&stale.url(), &security(&ca, &ca)));
    assert!(message.to_lowercase().contains("expired"), "{message}");
    assert!(Client::connect_with(&server.url(), &security(&ca, &ca)).is_ok());
    server.stop("test over");
    stale.stop("test over");
}

#[test]
fn a_wrong_or_missing_token_is_refused_over_tcp_and_tls_and_the_right_one_accepted() {
    let rt = runtime();
    let token = |s: &str| AuthToken::new(s.as_bytes().to_vec());
    let ca = CertificateAuthority::new("cluster CA").unwrap();
    for tls in [false, true] {
        let base = if tls { security(&ca, &ca) } else { Security::new() };
        let config = ServerConfig { security: base.clone().with_token(token("right")), ..Default::default() };
        let server = rt.block_on(SchedulerServer::start("127.0.0.1:0", config)).unwrap();
        let address = server.url();
        for wrong in [None, token("wrong"), token("righ"), token("right!")] {
            let message = connection_message(Client::connect_with(&address, &base.clone().with_token(wrong)));
            assert!(message.ends_with("refused the connection: authentication failed"), "{message}");
            assert!(!message.contains("right"), "{message}");
        }
        // A worker with the token joins (its data port requires the token too) and computes.
        let mut config = WorkerConfig::new(&address);
        config.security = base.clone().with_token(token("right"));
        config.nthreads = 1;
        let worker = rt.block_on(start_worker(config)).unwrap();
        let client = Client::connect_with(&address, &base.clone().with_token(token("right"))).unwrap();
        client.wait_for_workers(1, Duration::from_secs(30)).unwrap();
        let y = headline(60);
        assert!(y.compute_on(&client).unwrap().first().unwrap().is_finite());
        worker.close("test over");
        rt.block_on(worker.stopped());
        server.stop("test over");
    }
}
