//! The reference broker: serves the demo page and the built package,
//! implements broker protocol v1, keeps sessions in SQLite and stores bytes
//! in an embedded local-disk store with signed, expiring URLs.

mod auth;
mod config;
mod db;
mod downloads;
mod embedded;
#[cfg(test)]
mod hardening_tests;
mod limits;
mod private_file;
mod routes;
mod service;
mod store;
#[cfg(test)]
mod test_broker;
mod tus;

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs go to stderr: stdout carries the line scripts wait for.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut config = config::Config::from_env()?;
    config.settle_hosts()?;
    std::fs::create_dir_all(&config.data_dir)?;
    std::fs::set_permissions(&config.data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let db_path = config.data_dir.join("sessions.sqlite");
    private_file::restrict(&db_path)?;
    let db = db::Db::open(&db_path)?;
    let store = match (config.s3.take(), config.gcs.take()) {
        (Some(_), Some(_)) => return Err("configure S3_ENDPOINT or GCS_BUCKET, not both".into()),
        (Some(s3), None) => store::Store::S3(store::s3::S3Store::new(s3)?),
        (None, Some(gcs)) => store::Store::Gcs(Box::new(store::gcs::GcsStore::new(gcs)?)),
        (None, None) => store::Store::Local(store::local::LocalStore::open(
            &config.data_dir.join("store"),
            config.limits.idle_timeout,
        )?),
    };
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
    let address = listener.local_addr()?;
    let remote_tus = config.tus_endpoint.clone().map(tus::RemoteTus::new);
    let state = Arc::new(service::AppState {
        config,
        clock: service::Clock::default(),
        db,
        store,
        remote_tus,
        writes: Default::default(),
        limits: Default::default(),
    });
    tokio::spawn(sweep_forever(Arc::clone(&state)));
    // Scripts wait for this line.
    println!("rindle-broker listening on http://{address}");
    let app = routes::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

/// Expires sessions whose time ran out (removing their bytes) and removes
/// temporary files a crash left, every `SWEEP_SECS`.
async fn sweep_forever(state: Arc<service::AppState>) {
    let mut every = tokio::time::interval(state.config.limits.sweep_every);
    loop {
        every.tick().await;
        match service::sweep(&state).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "swept expired sessions"),
            Err(e) => tracing::warn!("sweep: {}", e.body.error.message),
        }
        if let Some(local) = state.store.local() {
            if let Err(e) = local.remove_stale_temp_files(std::time::Duration::from_secs(3_600)).await {
                tracing::warn!("sweep of temporary files: {e}");
            }
        }
    }
}

async fn shutdown() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
