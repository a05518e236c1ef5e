//! The engine against Garage, a real S3-compatible store, through the
//! reference broker's S3 backend. Needs the S3_* variables of
//! scripts/garage.sh (scripts/test.sh starts Garage and runs this with
//! `--ignored`).
#![cfg(not(target_arch = "wasm32"))]

mod support;

use rindle_upload::engine::{controls, Engine, Event, EventSink, UploadOptions};
use rindle_upload::queue::Queue;
use rindle_upload::{SessionState, UploadStrategy};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::rc::Rc;
use support::*;

fn s3_env() -> Vec<(&'static str, String)> {
    ["S3_ENDPOINT", "S3_REGION", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_PATH_STYLE"]
        .into_iter()
        .map(|name| {
            (
                name,
                std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start scripts/garage.sh")),
            )
        })
        .collect()
}

/// A single PUT signed for its CRC32C: Garage verified the bytes and keeps
/// the checksum, so the broker verifies from `HeadObject` without reading
/// the object back (the asset then has no SHA-256 of the broker's).
#[test]
#[ignore = "needs Garage: run by scripts/test.sh"]
fn a_presigned_put_is_verified_from_the_checksum_garage_holds() {
    let broker = BrokerProcess::start(&s3_env());
    let data = random_bytes(6 << 20, 0x5eed_5678);
    let expected = hex(&Sha256::digest(&data));
    let engine = Engine {
        broker: HttpBroker { endpoint: format!("{}/api/uploads", broker.url) },
        transport: ThreadTransport,
        clock: SystemClock,
        queue: Queue::unlimited(),
    };
    let events: EventSink = Rc::new(|_| {});
    for (checksum, sha256) in [("crc32c", None), ("sha256", Some(expected.clone()))] {
        let mut options =
            UploadOptions::new("vouched.bin", "application/octet-stream", UploadStrategy::PresignedPut);
        options.checksum = rindle_upload::wire::checksum::ChecksumAlgorithm::named(checksum);
        let (_control, commands) = controls();
        let outcome = futures::executor::block_on(engine.upload(
            &Bytes(data.clone()),
            &options,
            Rc::clone(&events),
            commands,
        ))
        .unwrap();
        assert_eq!(outcome.asset.sha256, sha256, "{checksum}: the broker read nothing back");
        assert_eq!(
            download_sha256(&outcome.asset.url),
            (6 << 20, expected.clone()),
            "{checksum}: stored bytes"
        );
    }
}

#[test]
#[ignore = "needs Garage: run by scripts/test.sh"]
fn sixty_four_mib_in_eight_mib_parts_lands_byte_identical() {
    let broker = BrokerProcess::start(&s3_env());
    let data = random_bytes(64 << 20, 0x5eed_1234);
    let expected = hex(&Sha256::digest(&data));

    let parts = Rc::new(RefCell::new(Vec::new()));
    let states = Rc::new(RefCell::new(Vec::new()));
    let events: EventSink = {
        let (parts, states) = (Rc::clone(&parts), Rc::clone(&states));
        Rc::new(move |event| match event {
            Event::PartStored { part_number, .. } => parts.borrow_mut().push(part_number),
            Event::StateChanged { to, .. } => states.borrow_mut().push(to),
            Event::Progress(_) | Event::Piece { .. } | Event::Paused(_) | Event::Queued(_) => {}
        })
    };
    let engine = Engine {
        broker: HttpBroker { endpoint: format!("{}/api/uploads", broker.url) },
        transport: ThreadTransport,
        clock: SystemClock,
        queue: Queue::unlimited(),
    };
    let options = UploadOptions::new("garage.bin", "application/octet-stream", UploadStrategy::Multipart);
    let (_control, commands) = controls();
    let outcome =
        futures::executor::block_on(engine.upload(&Bytes(data), &options, events, commands)).unwrap();

    assert_eq!(outcome.session.state, SessionState::Completed);
    assert_eq!(outcome.session.multipart_parts.len(), 8);
    let mut stored = parts.borrow().clone();
    stored.sort();
    assert_eq!(stored, (1..=8).collect::<Vec<u32>>());
    // Garage kept each part's CRC32C and the object's CRC32C of them: the
    // broker verified from those and read nothing back (no SHA-256 of its own).
    assert_eq!(outcome.asset.sha256, None, "the broker read the object back");
    assert!(
        outcome.session.multipart_parts.iter().all(|p| p.checksum.is_some()),
        "parts went with their CRC32C"
    );
    assert_eq!(download_sha256(&outcome.asset.url), (64 << 20, expected), "our own read-back from Garage");
    assert_eq!(
        *states.borrow(),
        [
            SessionState::Initialized,
            SessionState::Signed,
            SessionState::Uploading,
            SessionState::Uploaded,
            SessionState::Verifying,
            SessionState::Completed
        ]
    );
}
