"""Schema evolution end to end (issue 14 §7): adding an optional field is one migration plus one
contract change, and objects of a newer ingest are never quarantined by an older ETL.

The older ETL is this repository's; the newer one is a copy of `lambda_src/` whose contract (the
schema JSON) gained `campaign_id`, run as its own process (`python -m sbw_clickstream.etl_handler`)
against the same moto S3 and PostgreSQL. The migration is applied by sbw_ops.migrate from a copy
of the migrations directory plus the one new file, as the dw_schema role would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sbw_clickstream.etl import run_etl
from sbw_ops.migrate import DEFAULT_DIRECTORY, apply_migrations

from tests.fixtures.moto import S3Bucket
from tests.fixtures.postgres import PgDatabase
from tests.ingest_support import newer_lambda_src
from tests.test_etl_support import Source, connector, etl_config, make_event

REPO = Path(__file__).resolve().parents[1]
NEW_FIELD_MIGRATION = """-- campaign_id: the marketing campaign of the page view (optional).
ALTER TABLE public.clickstream_events ADD COLUMN campaign_id text;
UPDATE public.clickstream_events SET campaign_id = extra ->> 'campaign_id',
    extra = nullif(extra - 'campaign_id', '{}'::jsonb) WHERE extra ? 'campaign_id';
"""


def _rows(db: PgDatabase) -> dict[str, tuple[str | None, object]]:
    rows = db.query("SELECT source_key, campaign_id, extra FROM clickstream_events")
    return {key: (campaign, extra) for key, campaign, extra in rows}


def test_adding_an_optional_field_end_to_end(dw_db: PgDatabase, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    source = Source(s3_bucket.name, s3_bucket.client)
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    old = source.put(moment)
    # A newer ingest (deployed first) already writes the field; this ETL does not know it.
    early = source.put(moment + timedelta(seconds=1), [make_event(moment, source.rng, campaign_id="spring")])
    config = etl_config(dw_db, source.bucket)
    summary = run_etl(config, s3_bucket.client, connector(config))
    assert (summary["objects_loaded"], summary["objects_quarantined"]) == (2, 0)
    assert summary["fields_kept_in_extra"] == {"campaign_id": 1}
    extras = dict(dw_db.query("SELECT source_key, extra FROM clickstream_events"))
    assert extras == {old: None, early: {"campaign_id": "spring"}}

    # The field is added: one migration (applied like the role does) ...
    migrations = tmp_path / "migrations"
    shutil.copytree(DEFAULT_DIRECTORY, migrations)
    (migrations / "V900__events_campaign_id.sql").write_text(NEW_FIELD_MIGRATION)
    assert apply_migrations(dw_db.dsn(), migrations) == [900]
    # ... and one contract change: the newer ETL, with no other edit, loads it into its column.
    late = source.put(moment + timedelta(seconds=2), [make_event(moment, source.rng, campaign_id="autumn")])
    day = moment.date().isoformat()
    assert dw_db.etl is not None
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(newer_lambda_src(tmp_path)),
        "AWS_ENDPOINT_URL": s3_bucket.endpoint_url or "",
        "AWS_REGION": "ap-southeast-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DWH_HOST": dw_db.host,
        "DWH_PORT": str(dw_db.port),
        "DWH_USER": dw_db.etl.user,
        "DWH_PASSWORD": dw_db.etl.password,
        "DWH_DATABASE": dw_db.name,
        "RAW_BUCKET": source.bucket,
        "POWERTOOLS_SERVICE_NAME": "SBW_Lamda_ETL",
    }
    out = subprocess.run(
        [sys.executable, "-m", "sbw_clickstream.etl_handler", "--from", day, "--to", day],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    lines = out.stdout.splitlines()
    newer = json.loads("\n".join(lines[lines.index("{") :]))
    # Old and new objects both load (a backfill of the day re-reads the first two: duplicates).
    assert (newer["objects_loaded"], newer["objects_quarantined"], newer["rows_inserted"]) == (3, 0, 1)
    assert newer["fields_kept_in_extra"] == {}
    assert _rows(dw_db) == {old: (None, None), early: ("spring", None), late: ("autumn", None)}
