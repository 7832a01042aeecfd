//! TLS against a throwaway cluster that refuses plaintext TCP on `127.0.0.1`, with
//! certificates generated for the run: every `sslmode`, and each failure's typed error.

use std::time::Duration;

use factum::store::{NewEvent, Payload, StreamRead};
use factum::subscription::{Shutdown, Subscription, SubscriptionOptions};
use factum::{EventStore, ExpectedVersion, Metadata, StreamId};
use factum_postgres::testing::{OpenTransaction, TestDatabase, TlsTestDatabase};
use factum_postgres::tls::RootCertProblem;
use factum_postgres::{PgConfig, PgConnectOptions, PgError, PgStore, TlsFailure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

/// Generous: the machine running the tests may be loaded.
const DEADLINE: Duration = Duration::from_secs(30);

async fn cluster() -> TlsTestDatabase {
    TestDatabase::tls().await.expect("TLS test cluster")
}

fn config() -> PgConfig {
    PgConfig::default()
        .schema(&format!("tls_{}", Uuid::new_v4().simple()))
        .expect("schema")
        .pool_size(2)
}

async fn connect(url: &str) -> Result<PgStore, PgError> {
    PgStore::connect_with(url, config()).await
}

/// Whether the session of a pooled connection is encrypted, and its protocol version.
async fn session_tls(store: &PgStore) -> (bool, Option<String>) {
    let client = store.pool().get().await.expect("pooled connection");
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

fn events(n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "Happened".into(),
            schema_version: 1,
            payload: Payload::encode(&serde_json::json!({ "n": i })).expect("payload"),
            metadata: Metadata::new(),
        })
        .collect()
}

fn stream(id: &str) -> StreamId {
    StreamId::new("order", id).expect("stream id")
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let db = cluster().await;
    // No sslrootcert: nothing to check the certificate against, the session is encrypted.
    let url = db.url_to(&db.host, "require", None);
    let store = connect(&url).await.expect("require connects");
    let (ssl, version) = session_tls(&store).await;
    assert!(ssl, "the session is encrypted");
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "{version:?}"
    );

    // Connections outside the store too: the test support's idle transaction.
    let idle = OpenTransaction::begin(&url, "tls-idle")
        .await
        .expect("idle transaction over TLS");
    let pid = i32::try_from(idle.pid()).expect("pid");
    let client = store.pool().get().await.expect("pooled connection");
    let ssl: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the idle transaction's session is encrypted");
    idle.commit().await.expect("commit");
}

#[tokio::test]
async fn prefer_encrypts_when_the_server_offers_tls() {
    let db = cluster().await;
    let store = connect(&db.url_to(&db.host, "prefer", None))
        .await
        .expect("prefer connects");
    assert!(session_tls(&store).await.0);
    // `prefer` is the default.
    let url = format!("postgresql://postgres@{}:{}/postgres", db.host, db.port);
    let store = connect(&url).await.expect("the default connects");
    assert!(session_tls(&store).await.0);
}

#[tokio::test]
async fn verify_full_appends_reads_and_delivers_live() {
    let db = cluster().await;
    // The name `localhost` is in the certificate; the CA is the right one.
    let url = db.url_to("localhost", "verify-full", Some(&db.ca_file));
    // Only notifications can wake this store's subscribers within the deadline: it polls
    // every minute.
    let subscriber = PgStore::connect_with(&url, config().poll_interval(Duration::from_secs(60)))
        .await
        .expect("verify-full connects");
    subscriber.migrate().await.expect("migrate");
    assert!(session_tls(&subscriber).await.0);
    // Another store on the same schema appends, as another process would.
    let writer = PgStore::connect_with(&url, subscriber.config().clone())
        .await
        .expect("verify-full connects");

    let first = writer
        .append(&stream("1"), ExpectedVersion::NoStream, &events(1))
        .await
        .expect("append");
    // The listener (its own TLS connection) listens before it first reads the head.
    let mut head = subscriber.watch_head();
    tokio::time::timeout(DEADLINE, head.wait_for(|&h| h >= first.last_position))
        .await
        .expect("the listener reads the head")
        .expect("listener running");

    let mut subscription = Subscription::new(
        subscriber.clone(),
        first.last_position,
        SubscriptionOptions::new().poll_interval(Duration::from_secs(60)),
    );
    let shutdown = Shutdown::new();
    let appended = writer
        .append(&stream("1"), ExpectedVersion::Exact(1), &events(5))
        .await
        .expect("append");
    let mut delivered = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while delivered.len() < 5 {
            let batch = subscription
                .next(&shutdown)
                .await
                .expect("read")
                .expect("not shut down");
            delivered.extend(
                batch
                    .events
                    .into_iter()
                    .map(|e| (e.stream_version, e.position)),
            );
        }
    })
    .await
    .expect("the subscriber is woken by a notification");
    assert_eq!(
        delivered.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    assert_eq!(
        delivered.last().map(|(_, p)| *p),
        Some(appended.last_position)
    );

    let read = subscriber
        .read_stream(&stream("1"), &StreamRead::all())
        .await
        .expect("read back");
    assert_eq!(read.len(), 6);

    // Every head listener of this process runs over TLS.
    let client = subscriber.pool().get().await.expect("pooled connection");
    let row = client
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name = 'factum-head-listener'",
            &[],
        )
        .await
        .expect("listeners");
    let (listeners, all_ssl): (i64, Option<bool>) = (row.get(0), row.get(1));
    assert!(listeners >= 1);
    assert_eq!(all_ssl, Some(true));
}

#[tokio::test]
async fn verify_ca_ignores_the_name_and_verify_full_names_the_host() {
    let db = cluster().await;
    let ca = db.ca_file.display().to_string();
    let key_values = |mode: &str| {
        format!(
            "host=wrong.example hostaddr={} port={} user=postgres dbname=postgres \
             sslmode={mode} sslrootcert='{ca}'",
            db.host, db.port
        )
    };
    let store = connect(&key_values("verify-ca"))
        .await
        .expect("verify-ca does not check the name");
    assert!(session_tls(&store).await.0);
    let store = connect(&db.url_to(&db.other_host, "verify-ca", Some(&db.ca_file)))
        .await
        .expect("verify-ca does not check the name");
    assert!(session_tls(&store).await.0);

    for (url, host) in [
        (key_values("verify-full"), "wrong.example"),
        (
            db.url_to(&db.other_host, "verify-full", Some(&db.ca_file)),
            db.other_host.as_str(),
        ),
    ] {
        // ANCHOR: wrong_host
        let err = connect(&url).await.expect_err("the name is checked");
        let PgError::Tls {
            host: named,
            cause: TlsFailure::WrongHost { presented },
        } = &err
        else {
            panic!("{url}: {err:?}");
        };
        // ANCHOR_END: wrong_host
        assert_eq!(named, host);
        assert_eq!(presented, &["localhost", "127.0.0.1"]);
        let message = err.to_string();
        assert!(message.contains(&format!("`{host}`")), "{message}");
        assert!(
            message.contains("certificate is not valid for this host name"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn each_host_of_a_list_is_checked_under_its_own_name() {
    let db = cluster().await;
    // The first host's name is not in the certificate: the next one is tried, and taken.
    let url = format!(
        "host={},{} port={} user=postgres dbname=postgres sslmode=verify-full \
         sslrootcert='{}' target_session_attrs=read-write",
        db.other_host,
        db.host,
        db.port,
        db.ca_file.display()
    );
    let store = connect(&url).await.expect("the second host connects");
    assert!(session_tls(&store).await.0);
    let client = store.pool().get().await.expect("pooled connection");
    let address: String = client
        .query_one("SELECT host(inet_server_addr())", &[])
        .await
        .expect("server address")
        .get(0);
    assert_eq!(address, db.host);
}

#[tokio::test]
async fn an_unknown_authority_is_named() {
    let db = cluster().await;
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = db.url_to(&db.host, mode, Some(&db.foreign_ca_file));
        let err = connect(&url).await.expect_err("the chain is checked");
        assert!(
            matches!(
                &err,
                PgError::Tls { host, cause: TlsFailure::UnknownAuthority } if host == "127.0.0.1"
            ),
            "{mode}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("certificate signed by an unknown authority"),
            "{err}"
        );
    }
    // The platform's roots (no sslrootcert) do not know the test CA either; or, on a
    // machine without any, that is the error.
    let err = connect(&db.url_to("localhost", "verify-full", None))
        .await
        .expect_err("the platform's roots do not know the test CA");
    assert!(
        matches!(
            &err,
            PgError::Tls {
                cause: TlsFailure::UnknownAuthority,
                ..
            } | PgError::RootCert {
                problem: RootCertProblem::NoPlatformRoots(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn disable_is_refused_by_a_tls_only_server() {
    let db = cluster().await;
    let err = connect(&db.url_to(&db.host, "disable", None))
        .await
        .expect_err("pg_hba.conf refuses plaintext");
    let PgError::Connect { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        reason.contains("pg_hba.conf rejects connection") && reason.contains("no encryption"),
        "{reason}"
    );
    // The role allowed plaintext gets a plaintext session.
    let store = connect(&db.plain_url()).await.expect("plaintext connects");
    assert_eq!(session_tls(&store).await, (false, None));
}

#[tokio::test]
async fn require_fails_on_a_server_without_tls() {
    // A server that declines TLS, as PostgreSQL with `ssl=off` answers `SSLRequest`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = [0_u8; 8];
        socket.read_exact(&mut request).await.expect("SSLRequest");
        socket.write_all(b"N").await.expect("answer");
        request
    });
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=require");
    let err = connect(&url).await.expect_err("TLS is required");
    assert!(
        matches!(
            &err,
            PgError::Tls { host, cause: TlsFailure::NotSupported } if host == "127.0.0.1"
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("the server does not support TLS"),
        "{err}"
    );
    // The client asked for TLS: length 8, code 80877103.
    let request = server.await.expect("server");
    assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
}

#[tokio::test]
async fn unusable_root_certificates_fail_at_connect() {
    let db = cluster().await;
    let dir = std::env::temp_dir().join(format!("factum-tls-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let missing = dir.join("missing.pem");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    for (path, expected) in [
        (&missing, "cannot read it"),
        (&not_pem, "no PEM certificate"),
    ] {
        let err = connect(&db.url_to(&db.host, "verify-full", Some(path)))
            .await
            .expect_err("unusable sslrootcert");
        let PgError::RootCert { path: named, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(named, &path.display().to_string());
        assert!(err.to_string().contains(expected), "{err}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn raw_connections_take_the_same_options() {
    let db = cluster().await;
    let client = PgConnectOptions::parse(&db.url("verify-full"))
        .expect("url")
        .connect()
        .await
        .expect("verify-full connects");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl);
    let err = PgConnectOptions::parse(&db.url_to(&db.other_host, "verify-full", Some(&db.ca_file)))
        .expect("url")
        .connect()
        .await
        .expect_err("wrong name");
    assert!(
        matches!(
            err,
            PgError::Tls {
                cause: TlsFailure::WrongHost { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

/// The fault proxy forwards a TLS session untouched (it stops parsing once the handshake
/// starts), so fault scenarios apply to encrypted connections too: a cut ends the session, and
/// the store carries on over a new, verified one.
#[tokio::test]
async fn tls_runs_through_the_fault_proxy_and_survives_a_cut() {
    use factum_postgres::testing::proxy::Proxy;

    let db = cluster().await;
    let proxy = Proxy::start(&db.url_to(&db.host, "require", None))
        .await
        .expect("proxy to the TLS cluster");
    // The proxy listens on 127.0.0.1, a name in the server's certificate.
    let url = format!(
        "{} sslmode=verify-full sslrootcert='{}'",
        proxy.url(),
        db.ca_file.display()
    );
    let store = connect(&url).await.expect("verify-full through the proxy");
    store.migrate().await.expect("migrate");
    assert!(session_tls(&store).await.0, "the session is encrypted");

    let s = stream("through-proxy");
    store
        .append(&s, ExpectedVersion::NoStream, &events(3))
        .await
        .expect("append over TLS through the proxy");
    let before = proxy.stats();
    assert!(before.accepted >= 1 && before.cut == 0, "{before:?}");
    // Only the startup-level exchange is framed: the SSL request, then opaque bytes.
    for connection in proxy.connections() {
        assert!(
            connection.messages_to_server <= 1 && connection.bytes_to_server > 100,
            "an encrypted connection is passed through, not parsed: {connection:?}"
        );
    }

    let cut = proxy.cut_all();
    assert!(cut >= 1, "the store's connections went through the proxy");
    // The store gives back the connections it finds closed and opens new ones: the next
    // appends succeed, each after at most a failure on a connection cut under it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut stored = 0;
    while stored < 2 {
        match store
            .append(&s, ExpectedVersion::Exact(3 + stored), &events(1))
            .await
        {
            Ok(_) => stored += 1,
            Err(factum::StoreError::Backend(error)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no recovery: {error}"
                );
            }
            Err(other) => panic!("unexpected error after a cut: {other}"),
        }
    }
    let after = proxy.stats();
    assert!(
        after.accepted > before.accepted,
        "new connections: {after:?}"
    );
    assert!(session_tls(&store).await.0, "the new session is encrypted");
    let read = store
        .read_stream(&s, &StreamRead::all())
        .await
        .expect("read back");
    let versions: Vec<u64> = read.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
}
