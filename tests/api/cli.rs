//! The command line, run as the real binary.

use std::process::Command;

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_carbon-ledger"))
        .args(args)
        .env("CARBON_LEDGER_DATA_DIR", dir)
        .env_remove("CARBON_LEDGER_DATABASE_URL")
        .env_remove("CARBON_LEDGER_ROOT_KEY_FILE")
        .env_remove("CARBON_LEDGER_POLICIES")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn policy_check_prints_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(dir.path(), &["policy", "check"]);
    assert!(ok);
    assert!(out.contains("methodology cn-inclusive-2026.1 with 8 kinds"), "{out}");
    let digest = out.lines().last().unwrap().strip_prefix("digest ").unwrap();
    assert_eq!(digest.len(), 64);

    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("methodology.toml"), "version = \"x\"\n").unwrap();
    let (ok, _, err) = run(
        dir.path(),
        &["--policies", policies.to_str().unwrap(), "policy", "check"],
    );
    assert!(!ok);
    assert!(err.contains("methodology.toml"), "{err}");
}

#[test]
fn first_run_creates_a_private_data_dir_and_key_then_refuses_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ok, out, err) = run(&data, &["tenant", "add", "--name", "luzhou", "--role", "platform"]);
    assert!(ok, "{err}");
    assert!(out.lines().last().unwrap().starts_with("clk_"), "{out}");
    assert!(err.contains("created a new root key"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::metadata(data.join("root.key")).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (ok, _, err) = run(&data, &["tenant", "add", "--name", "luzhou", "--role", "platform"]);
    assert!(!ok && err.contains("exists already"), "{err}");

    std::fs::write(data.join("other.key"), hex::encode([7u8; 32])).unwrap();
    let (ok, _, err) = run(
        &data,
        &["--root-key-file", data.join("other.key").to_str().unwrap(), "migrate"],
    );
    assert!(!ok);
    assert!(
        err.contains("not the key this database was created with") && err.contains("--root-key-file"),
        "{err}"
    );

    let (ok, out, _) = run(&data, &["audit", "verify"]);
    assert!(ok && out.contains("1 entries checked"), "{out}");
}

#[test]
fn a_checkpoint_of_the_empty_log_does_not_break_verification() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for args in [
        &["migrate"][..],
        &["audit", "checkpoint"],
        &["tenant", "add", "--name", "x", "--role", "auditor"],
    ] {
        let (ok, _, err) = run(&data, args);
        assert!(ok, "{args:?}: {err}");
    }
    let (ok, out, _) = run(&data, &["audit", "verify"]);
    assert!(ok && out.contains("1 entries checked"), "{out}");
    let export = dir.path().join("export");
    let (ok, _, err) = run(&data, &["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&data, &["audit", "verify", "--from", export.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("pin the one you hold"), "{err}");
}

#[test]
fn a_changed_methodology_needs_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for name in [
        "access.toml",
        "consent.toml",
        "retention.toml",
        "methodology.toml",
        "points.toml",
    ] {
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies/").to_owned() + name,
            policies.join(name),
        )
        .unwrap();
    }
    let shipped = include_str!("../../policies/methodology.toml");
    let policies_arg = policies.to_str().unwrap();

    // `serve` records the load, then we stop it by pointing it at a taken port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().to_string();
    let (ok, _, err) = run(&data, &["--policies", policies_arg, "serve", "--listen", &taken]);
    assert!(!ok && err.contains("cannot listen"), "{err}");

    std::fs::write(
        policies.join("methodology.toml"),
        shipped.replace("g_per_unit = 144", "g_per_unit = 150"),
    )
    .unwrap();
    let (ok, _, err) = run(&data, &["--policies", policies_arg, "serve", "--listen", &taken]);
    assert!(!ok);
    assert!(err.contains("needs a new version"), "{err}");
}
