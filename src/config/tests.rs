//! Unit tests of loading and validating the configuration.

use super::*;

#[test]
fn defaults_validate() {
    assert!(Config::default().validate().is_ok());
}

#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[http]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
    let err = Config::load(Some(&path)).err().unwrap().to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn errors_name_the_key_and_the_file_without_figment_internals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[http]\nlisten = \"localhost:80\"\n").unwrap();
    let err = Config::load(Some(&path)).err().unwrap().to_string();
    assert!(
        err.starts_with("invalid configuration: key http.listen in "),
        "{err}"
    );
    assert!(err.contains("IP:PORT"), "{err}");
    assert!(
        !err.contains("default.") && !err.contains("TOML file"),
        "{err}"
    );
}

#[test]
fn an_unknown_log_level_is_refused() {
    let mut c = Config::default();
    c.log.level = "loud".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("invalid configuration: key log.level: "),
        "{err}"
    );
}

#[test]
fn out_of_range_delivery_settings_are_refused() {
    let mut c = Config::default();
    c.delivery.retry_delays_secs = vec![1.0, -1.0];
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("delivery.retry_delays_secs"), "{err}");
    c.delivery = DeliveryConfig {
        commit_window: 0,
        ..DeliveryConfig::default()
    };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("delivery.commit_window"), "{err}");
}

#[test]
fn a_snapshot_chunk_size_outside_the_transport_limit_is_refused() {
    let mut c = Config::default();
    for bytes in [0, MAX_SNAPSHOT_CHUNK_BYTES + 1] {
        c.cluster.snapshot_chunk_bytes = bytes;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.snapshot_chunk_bytes"), "{err}");
    }
    c.cluster.snapshot_chunk_bytes = 1;
    assert!(c.validate().is_ok());
}
