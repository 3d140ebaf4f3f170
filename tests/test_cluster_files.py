"""Cluster files: the shipped cluster.yaml and cluster-aws.yaml pass `python -m study.cluster check`;
broken variants (written here, from the shipped files or from a tiny file whose lines are counted
by hand) fail with Ray's message or cirstudy's rule, at the right line, without a traceback."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.cluster import ClusterFileError, check_cluster_file

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["cluster.yaml", "cluster-aws.yaml"]

# Its lines, counted by hand: 1 cluster_name, 2 provider, 3 type, 4 head_ip, 5 worker_ips, 6 metadata,
# 7 cirstudy_storage, 8 initialization_commands, 9 the mount; a line appended is line 10.
TINY = """\
cluster_name: tiny
provider:
  type: local
  head_ip: 10.0.0.1
  worker_ips: [10.0.0.2]
metadata:
  cirstudy_storage: /shared/studies
initialization_commands:
  - sudo mkdir -p /shared && sudo mount -t nfs4 nfs.internal:/export /shared
"""


def problems(tmp_path: Path, text: str, name: str = "variant.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ClusterFileError) as caught:
        check_cluster_file(path)
    return caught.value.problems


def shipped_lines(name: str) -> list[str]:
    return (ROOT / name).read_text().splitlines()


def line_of(lines: list[str], start: str) -> int:
    """1-based number of the only line that starts with `start`."""
    found = [number for number, line in enumerate(lines, start=1) if line.startswith(start)]
    assert len(found) == 1, (start, found)
    return found[0]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_passes(name: str) -> None:
    summary = check_cluster_file(ROOT / name)
    assert summary.storage == "/shared/studies"
    assert summary.provider == {"cluster.yaml": "local (on-prem)", "cluster-aws.yaml": "aws us-west-2"}[name]


def test_cli_passes_both_shipped_files_with_a_summary() -> None:
    result = subprocess.run([sys.executable, "-m", "study.cluster", "check", *SHIPPED], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("passes Ray 2.60.0's preparation and validation") == 2
    assert "head 10.0.0.1, 2 workers (10.0.0.2, 10.0.0.3)" in result.stdout
    assert "`gpu_worker` x 0-8 (g5.2xlarge, CPU 8, GPU 1)" in result.stdout
    assert result.stdout.count("storage   /shared/studies") == 2


def test_cli_failure_is_a_message_and_exit_code_2_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(TINY.replace("  type: local\n", ""))
    result = subprocess.run([sys.executable, "-m", "study.cluster", "check", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: {path}, line 2: `provider`: 'type' is a required property\n"


def test_tiny_file_passes(tmp_path: Path) -> None:
    """The base of the broken variants below: each fails only for the reason it tests."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert check_cluster_file(path).nodes == "head 10.0.0.1, 1 worker (10.0.0.2)"


def test_typo_in_a_top_level_key_fails_with_rays_message_at_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, TINY.replace("initialization_commands:", "initialisation_commands:"))
    assert found == [f"{tmp_path / 'variant.yaml'}, line 8: `initialisation_commands`: Additional properties are "
                     "not allowed ('initialisation_commands' was unexpected); did you mean `initialization_commands`?"]


def test_typo_in_the_shipped_file_is_found_at_its_line(tmp_path: Path) -> None:
    lines = shipped_lines("cluster-aws.yaml")
    line = line_of(lines, "idle_timeout_minutes:")
    text = "\n".join(lines).replace("idle_timeout_minutes:", "idle_timout_minutes:")
    [found] = problems(tmp_path, text)
    assert found.startswith(f"{tmp_path / 'variant.yaml'}, line {line}: `idle_timout_minutes`: Additional properties")
    assert found.endswith("did you mean `idle_timeout_minutes`?")


def test_missing_provider_type_fails_at_the_line_of_provider(tmp_path: Path) -> None:
    assert problems(tmp_path, TINY.replace("  type: local\n", "")) == [
        f"{tmp_path / 'variant.yaml'}, line 2: `provider`: 'type' is a required property"]


def test_missing_head_ip_fails_with_rays_message_naming_it(tmp_path: Path) -> None:
    assert problems(tmp_path, TINY.replace("  head_ip: 10.0.0.1\n", "")) == [
        f"{tmp_path / 'variant.yaml'}, line 2: Ray: Please supply a `head_ip` and list of `worker_ips`. "
        "Alternatively, supply a `coordinator_address`. (`provider` has no head_ip)"]


def test_missing_node_resources_on_aws_fails_at_the_node_type(tmp_path: Path) -> None:
    lines = shipped_lines("cluster-aws.yaml")
    line = line_of(lines, "  gpu_worker:")
    text = "\n".join(row for row in lines if not row.startswith("    resources: {CPU: 8, GPU: 1}"))
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'variant.yaml'}, line {line}: `available_node_types.gpu_worker`: 'resources' is a required property"]


def test_node_types_on_prem_fail_with_rays_message(tmp_path: Path) -> None:
    text = TINY + "available_node_types: {x: {resources: {}, node_config: {}}}\n"  # line 10
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'variant.yaml'}, line 10: Ray: The field available_node_types is not supported for on-premise clusters."]


def test_invalid_yaml_fails_at_its_line(tmp_path: Path) -> None:
    [found] = problems(tmp_path, TINY.replace("  worker_ips: [10.0.0.2]", "  worker_ips: [10.0.0.2"))
    assert found.startswith(f"{tmp_path / 'variant.yaml'}, line 6: not valid YAML:")


def test_a_key_given_twice_fails_at_the_second(tmp_path: Path) -> None:
    assert problems(tmp_path, TINY + "cluster_name: again\n") == [
        f"{tmp_path / 'variant.yaml'}, line 10: `cluster_name` appears twice; YAML keeps only the last one"]


def test_dashboard_open_to_every_interface_fails_at_its_command(tmp_path: Path) -> None:
    lines = shipped_lines("cluster.yaml")
    line = line_of(lines, "  - ulimit -n 65536; ray start --head")
    text = "\n".join(lines).replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
    [found] = problems(tmp_path, text)
    assert found.startswith(f"{tmp_path / 'variant.yaml'}, line {line}: `--dashboard-host=0.0.0.0` opens the "
                            "dashboard and job API (8265), which have no authentication")


def test_rays_aws_default_dashboard_host_fails(tmp_path: Path) -> None:
    """Without head_start_ray_commands, Ray's aws defaults bind the dashboard to 0.0.0.0."""
    config = yaml.safe_load((ROOT / "cluster-aws.yaml").read_text())
    del config["head_start_ray_commands"]
    [found] = problems(tmp_path, yaml.safe_dump(config))
    assert found.startswith(f"{tmp_path / 'variant.yaml'}: the file sets no head_start_ray_commands, and Ray's aws "
                            "defaults pass `--dashboard-host=0.0.0.0`")


@pytest.mark.parametrize(("cidr", "from_port", "to_port", "refused"), [
    ("0.0.0.0/0", 8000, 9000, True),     # a range over 8265
    ("::/0", 8265, 8265, True),
    ("10.0.0.0/16", 8265, 8265, False),  # a private network
    ("0.0.0.0/0", 6006, 6006, False),    # not one of Ray's ports
])
def test_security_group_rule_open_to_the_world_on_a_ray_port_fails(tmp_path: Path, cidr: str, from_port: int,
                                                                   to_port: int, refused: bool) -> None:
    lines = shipped_lines("cluster-aws.yaml")
    at = line_of(lines, "  cache_stopped_nodes:")  # the rule lands 4 lines below it
    ranges = f"Ipv6Ranges: [{{CidrIpv6: '{cidr}'}}]" if ":" in cidr else f"IpRanges: [{{CidrIp: {cidr}}}]"
    lines[at:at] = ["  security_group:", "    GroupName: ray-cirstudy", "    IpPermissions:",
                    f"      - {{IpProtocol: tcp, FromPort: {from_port}, ToPort: {to_port}, {ranges}}}"]
    path = tmp_path / "variant.yaml"
    path.write_text("\n".join(lines))
    if not refused:
        check_cluster_file(path)
        return
    [found] = problems(tmp_path, "\n".join(lines))
    assert found.startswith(f"{path}, line {at + 4}: `provider.security_group.IpPermissions[0]` opens 8265 (the "
                            f"dashboard and job API) to {cidr}, and Ray has no authentication")


@pytest.mark.parametrize(("pasted", "what"), [
    ("  - export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
    ("  - export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
     "`AWS_SECRET_ACCESS_KEY` is given a value written in the file"),
    ("  - echo aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY >> ~/.aws/credentials",
     "`aws_secret_access_key` is given a value written in the file"),
    ("  - echo '-----BEGIN OPENSSH PRIVATE KEY-----' > ~/.ssh/id", "a private key"),
    ("  - huggingface-cli login --token hf_abcdefghijklmnopqrstuvwxyz0123456789", "a Hugging Face token"),
    ("  - ray start --head --redis-password 5241590000000000", "`--redis-password` is given a value written in the file"),
    ("  - \"echo 'password: hunter2' > ~/.netrc\"", "`password` is given a value written in the file"),
])
def test_a_secret_pasted_into_the_file_fails_at_its_line_without_showing_it(tmp_path: Path, pasted: str,
                                                                            what: str) -> None:
    lines = shipped_lines("cluster.yaml")
    at = line_of(lines, "setup_commands:")
    lines.insert(at, pasted)  # becomes line at + 1
    [found] = problems(tmp_path, "\n".join(lines))
    assert found.startswith(f"{tmp_path / 'variant.yaml'}, line {at + 1}: {what} (not shown); remove it")
    for value in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "BEGIN OPENSSH", "hf_abc", "5241590000000000", "hunter2"):
        assert value not in found


@pytest.mark.parametrize("command", [
    "export WANDB_API_KEY=$WANDB_API_KEY",        # read from the node's environment
    "export HF_TOKEN=\"${HF_TOKEN}\"",
    "pip install tokenizers==0.19.1",              # a word that only contains "token"
    "echo 'no password here' && ls ~/.ssh",
])
def test_what_is_not_a_secret(tmp_path: Path, command: str) -> None:
    path = tmp_path / "variant.yaml"
    path.write_text(TINY + f"setup_commands:\n  - {command}\n")
    check_cluster_file(path)


def test_checking_contacts_no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the check tried to connect: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in SHIPPED:
        check_cluster_file(ROOT / name)
    assert not [module for module in sys.modules if module.startswith("boto")]


def test_storage_not_declared_fails(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    del config["metadata"]
    [found] = problems(tmp_path, yaml.safe_dump(config))
    assert found.startswith(f"{tmp_path / 'variant.yaml'}, line 1: no shared storage declared: add "
                            "`metadata: {cirstudy_storage: /shared/studies}`")


def test_relative_storage_fails_at_its_line(tmp_path: Path) -> None:
    assert problems(tmp_path, TINY.replace("cirstudy_storage: /shared/studies", "cirstudy_storage: studies")) == [
        f"{tmp_path / 'variant.yaml'}, line 7: `metadata.cirstudy_storage` must be an absolute path, got 'studies'; "
        "e.g. `metadata: {cirstudy_storage: /shared/studies}`"]


@pytest.mark.parametrize(("command", "mounted"), [
    ("sudo mount -t nfs4 -o nfsvers=4.1 fs-1.efs.us-west-2.amazonaws.com:/ /shared/", True),
    ("sudo mount.nfs4 nfs.internal:/export/studies /shared/studies", True),
    ("mountpoint -q /shared || exit 1", True),
    ("sudo mount -t nfs4 nfs.internal:/export /data", False),     # another path
    ("sudo mount --bind /data /shared", False),                   # not a network filesystem
    ("sudo mkdir -p /shared/studies", False),
])
def test_storage_must_be_mounted_from_a_network_filesystem(tmp_path: Path, command: str, mounted: bool) -> None:
    path = tmp_path / "variant.yaml"
    path.write_text(TINY.replace("sudo mkdir -p /shared && sudo mount -t nfs4 nfs.internal:/export /shared", command))
    if mounted:
        check_cluster_file(path)
        return
    [found] = problems(tmp_path, path.read_text())
    assert found.startswith(f"{path}, line 7: the storage /shared/studies is not mounted on the head and the workers")


def test_a_worker_type_that_overrides_the_mount_fails_naming_it(tmp_path: Path) -> None:
    """Ray runs a node type's own initialization_commands instead of the global ones."""
    config = yaml.safe_load((ROOT / "cluster-aws.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["initialization_commands"] = ["nvidia-smi"]
    [found] = problems(tmp_path, yaml.safe_dump(config))
    assert "the storage /shared/studies is not mounted on the `gpu_worker` workers" in found
