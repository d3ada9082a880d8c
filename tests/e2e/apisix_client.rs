//! A real third-party client (issue 14): the Python package `apisix-client` from PyPI,
//! installed into a virtual environment by this test, creates, reads, updates and
//! deletes upstreams, services, routes and consumers against Portico
//! (`tests/e2e/apisix_client/driver.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The version the driver was written against.
const PACKAGE: &str = "apisix-client==1.0.3";

/// A virtual environment with the package, made once per target dir and reused.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("apisix-client-venv");
    let python = dir.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import apisix_client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output()
        .expect("python3 runs");
    assert!(made.status.success(), "python3 -m venv: {made:?}");
    let pip = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", PACKAGE])
        .output()
        .expect("pip runs");
    assert!(
        pip.status.success(),
        "pip install {PACKAGE}: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    assert!(ready(&python), "{PACKAGE} installed but does not import");
    python
}

#[test]
fn apisix_client_from_pypi_crud() {
    let python = venv();
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let (host, port) = b
        .node()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/apisix_client/driver.py");
    let out = Command::new(python)
        .arg(driver)
        .arg(format!("http://{}/", gw.admin_addr()))
        .arg(&gw.admin_key)
        .args([host, port])
        .output()
        .expect("the driver runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "driver failed:\n{stdout}\n{stderr}"
    );
    // Anything the client read differently from APISIX is printed as a NOTE.
    eprintln!("{stdout}");
}
