//! The reference broker: serves the demo page and the built package,
//! implements broker protocol v1, keeps sessions in SQLite and stores bytes
//! in an embedded local-disk store with signed, expiring URLs.

mod config;
mod db;
mod embedded;
mod routes;
mod service;
mod store;
mod tus;

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut config = config::Config::from_env()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let db = db::Db::open(&config.data_dir.join("sessions.sqlite"))?;
    let store = match (config.s3.take(), config.gcs.take()) {
        (Some(_), Some(_)) => return Err("configure S3_ENDPOINT or GCS_BUCKET, not both".into()),
        (Some(s3), None) => store::Store::S3(store::s3::S3Store::new(s3)?),
        (None, Some(gcs)) => store::Store::Gcs(Box::new(store::gcs::GcsStore::new(gcs)?)),
        (None, None) => store::Store::Local(store::local::LocalStore::open(&config.data_dir.join("store"))?),
    };
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
    let address = listener.local_addr()?;
    let remote_tus = config.tus_endpoint.clone().map(tus::RemoteTus::new);
    let state =
        Arc::new(service::AppState { config, clock: service::Clock::default(), db, store, remote_tus });
    // Scripts wait for this line.
    println!("rindle-broker listening on http://{address}");
    axum::serve(listener, routes::router(state)).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
