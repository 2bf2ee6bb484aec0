"""checkov (the version the Makefile installs in .venv-checkov) passes on infra/.

Any exception is an inline `#checkov:skip=CKV_...:justification` beside the resource; a skip
list in a .checkov.yaml is not allowed. checkov exits 0 when it cannot parse a template, so the
parse errors in its JSON summary are checked too.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.infra.templates import INFRA_DIR, REPO_ROOT

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"

# Every accepted exception, reviewed: a new skip must be added here on purpose.
EXPECTED_SKIPS = {
    # Flex Consumption: no siteConfig.ftpsState (FTP is off by policy resource), no worker count,
    # zone redundancy left to the operator, no instance health-check pings on a scale-to-zero plan.
    ("CKV_AZURE_78", "Microsoft.Web/sites.site"),
    ("CKV_AZURE_212", "Microsoft.Web/sites.site"),
    ("CKV_AZURE_213", "Microsoft.Web/sites.site"),
    ("CKV_AZURE_225", "Microsoft.Web/serverfarms.plan"),
    # The app is the public front door, and its callers cannot present client certificates.
    ("CKV_AZURE_222", "Microsoft.Web/sites.site"),
    ("CKV_AZURE_17", "Microsoft.Web/sites.site"),
    # Checks written for the "web" config resource (or auth v1) that misfire on authsettingsV2.
    ("CKV_AZURE_13", "Microsoft.Web/sites/config.authSettings"),
    ("CKV_AZURE_63", "Microsoft.Web/sites/config.authSettings"),
    ("CKV_AZURE_65", "Microsoft.Web/sites/config.authSettings"),
    ("CKV_AZURE_66", "Microsoft.Web/sites/config.authSettings"),
    ("CKV_AZURE_80", "Microsoft.Web/sites/config.authSettings"),
    ("CKV_AZURE_88", "Microsoft.Web/sites/config.authSettings"),
    ("CKV_AZURE_222", "Microsoft.Web/sites/config.authSettings"),
    # Network deny depends on privateNetworking; geo-replication adds nothing to re-creatable data.
    ("CKV_AZURE_35", "Microsoft.Storage/storageAccounts.storage"),
    ("CKV_AZURE_206", "Microsoft.Storage/storageAccounts.storage"),
    ("CKV_AZURE_109", "Microsoft.KeyVault/vaults.vault"),
    ("CKV_AZURE_189", "Microsoft.KeyVault/vaults.vault"),
}


@pytest.fixture(scope="module")
def checkov_run() -> subprocess.CompletedProcess[str]:
    assert CHECKOV.is_file(), "checkov is missing: `make install` creates .venv-checkov"
    return subprocess.run(
        [str(CHECKOV), "--framework", "bicep", "-d", "infra", "--skip-download", "-o", "json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def report(checkov_run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    completed = checkov_run
    try:
        document = json.loads(completed.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {completed.returncode}):\n{completed.stderr[-2000:]}")
    reports = document if isinstance(document, list) else [document]
    (bicep,) = [item for item in reports if item.get("check_type") == "bicep"]
    return dict(bicep)


def test_checkov_parses_every_template(report: dict[str, Any]) -> None:
    assert report["summary"]["parsing_errors"] == 0, report["results"]["parsing_errors"]
    assert report["summary"]["resource_count"] > 0


def test_every_check_can_evaluate_the_templates(checkov_run: subprocess.CompletedProcess[str]) -> None:
    """A check that crashes on an expression (it logs "Failed to run check") checks nothing, skipped or not."""
    crashed = [line for line in checkov_run.stderr.splitlines() if "Failed to run check" in line]
    assert crashed == []


def test_checkov_finds_no_failed_check(report: dict[str, Any]) -> None:
    failed = [
        f"{item['check_id']} {item['resource']} ({item['file_path']}): {item['check_name']}"
        for item in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["failed"] == 0
    assert report["summary"]["passed"] > 0


def test_every_skip_is_inline_with_a_justification(report: dict[str, Any]) -> None:
    for item in report["results"]["skipped_checks"]:
        justification = item["check_result"].get("suppress_comment", "")
        assert len(justification.split()) >= 5, f"{item['check_id']} on {item['resource']} lacks a justification"


def test_only_the_reviewed_checks_are_skipped(report: dict[str, Any]) -> None:
    skipped = {(item["check_id"], item["resource"]) for item in report["results"]["skipped_checks"]}
    assert skipped == EXPECTED_SKIPS


def test_no_checkov_config_file_holds_skips() -> None:
    for folder in (REPO_ROOT, INFRA_DIR):
        for name in (".checkov.yaml", ".checkov.yml"):
            assert not (folder / name).exists(), f"{folder / name}: put skips inline, beside the resource"
