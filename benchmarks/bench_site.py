"""Cost of a no-op `site.yml` re-run on the sandbox, per host, against a same-run baseline.

Over SSM every task is a round trip of seconds, so the figure that matters is the number of tasks a
re-run executes per host; the wall time is printed as a ratio to the baseline measured in the same
run: one `ansible -m ansible.builtin.ping` round trip to the same hosts (connection + one module).

Brings up its own copy of the sandbox inventory (unique name, state directories, moto and SSM ports,
hosts in 198.18.0.176/28 and AWS service address 198.18.0.229, so it never collides with the default
sandbox or a test), converges it once, measures, and tears it down. The hosts are reached as the host
plays reach them: inventory/aws_ec2.yml over amazon.aws.aws_ssm. Helpers are shared with
tests/test_site_sandbox.py.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import yaml

from tests.test_site_sandbox import (
    ansible_env,
    play_recap,
    run_ansible,
    run_playbook,
    sandbox_inventory,
)

ROUNDS = 3
HOSTS = ("webdb", "dwh")
BLOCK = 176  # 198.18.0.176/28: webdb in .176/29, dwh in .184/29
AWS_ADDRESS = "198.18.0.229"


def _median_seconds(action: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[float, str]:
    """Median wall time of ROUNDS calls of `action`, and the stdout of the last one."""
    times: list[float] = []
    stdout = ""
    for _ in range(ROUNDS):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"{result.args} failed:\n{result.stdout[-3000:]}")
        stdout = result.stdout
    return statistics.median(times), stdout


def main() -> None:
    env = ansible_env()
    with TemporaryDirectory(prefix="sbw-bench-site-") as tmp:
        inventory, extra = sandbox_inventory(Path(tmp), BLOCK, AWS_ADDRESS)
        ping = ["role_webdb:role_dwh", "-m", "ansible.builtin.ping"]
        try:
            up = run_playbook("playbooks/sandbox.yml", inventory, extra, env, over_ssm=False)
            for result in (up, run_playbook("site.yml", inventory, extra, env)):  # bring up, converge once
                if result.returncode != 0:
                    raise RuntimeError(f"{result.args[:4]} failed:\n{result.stdout[-3000:]}")
            ping_s, _ = _median_seconds(lambda: run_ansible("ansible", ping, inventory, extra, env))
            rerun_s, stdout = _median_seconds(lambda: run_playbook("site.yml", inventory, extra, env))
            facts = yaml.safe_load(Path(extra["sbw_stacks_facts_file"]).read_text())
        finally:
            run_playbook(
                "playbooks/sandbox.yml", inventory, {**extra, "sandbox_state": "absent"}, env, over_ssm=False
            )

    # localhost: the stacks play (AWS API calls from the controller, no SSM round trips); the hosts
    # by their instance ids (inventory/aws_ec2.yml), named webdb / dwh here.
    names = {
        facts["sbw_webdb_instance_id"]: "webdb",
        facts["sbw_dwh_instance_id"]: "dwh",
        "localhost": "localhost",
    }
    recap = {names[host]: counts for host, counts in play_recap(stdout).items() if host in names}
    changed = sum(counts["changed"] for counts in recap.values())
    print(f"baseline: ansible -m ping round trip, {len(HOSTS)} hosts (median of {ROUNDS}): {ping_s:.2f} s")
    print(
        f"site.yml no-op re-run (median of {ROUNDS}): {rerun_s:.2f} s = {rerun_s / ping_s:.1f}x baseline, "
        f"changed={changed}"
    )
    for host, counts in sorted(recap.items()):
        # ok counts every task that ran, controller-only ones (assert, set_fact) too: an upper bound of
        # the SSM round trips; skipped tasks cost none. localhost is the stacks play (AWS API calls).
        what = "AWS API tasks on the controller" if host == "localhost" else "tasks, <= SSM round trips"
        print(f"  {host}: {counts['ok']} {what} per no-op re-run (+{counts['skipped']} skipped)")


if __name__ == "__main__":
    main()
