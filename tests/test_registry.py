"""`tungsten push`, `pull`, and serving by reference, against a real registry (docker-registry)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.registrysupport import MISSING, Registry
from tests.support import MODELS, ServerFactory, start_worker, tungsten, wait_for
from tungstenkit._artifact import (
    CONFIG_MEDIA_TYPE,
    FILE_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    canonical_json,
    describe,
    sha256_bytes,
)
from tungstenkit._dockerfile import write_build_context
from tungstenkit._oci import RegistryReference
from tungstenkit._redis_server import free_port
from tungstenkit._registry_client import RegistryClient
from tungstenkit._settings import Settings
from tungstenkit._store import ModelStore, StoredModel

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry on loopback without TLS or logins (as a team's local test registry)."""
    server = Registry(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with TLS (a certificate made for the test) and a login."""
    server = Registry(tmp_path_factory.mktemp("secure-registry"), tls=True, users={"alice": PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def docker_dir(tmp_path: Path) -> Path:
    """An empty Docker config folder, so the machine's own logins play no part."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    return folder


def _env(home: Path, docker_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "TUNGSTEN_HOME": str(home),
        "DOCKER_CONFIG": str(docker_dir),
        "TUNGSTEN_REDIS_CONNECT_TIMEOUT_S": "5",
        **extra,
    }


def _build(home: Path, tmp_path: Path, name: str = "weighted", tag: str = "v1", scale: int = 7) -> StoredModel:
    """The `weighted` test model built from a folder, as `tungsten build` stores it."""
    folder = tmp_path / f"src-{name}-{tag}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(MODELS / "weighted", folder)
    (folder / "weights" / "scale.json").write_text(json.dumps({"scale": scale}))
    return ModelStore(home).build(folder, name, tag, dockerfile=write_build_context)


def _snapshot(home: Path) -> list[str]:
    """Every path under a home, hidden ones included (a half-pulled model would show)."""
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) if home.exists() else []


def _one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and fragment in last, result.stderr
    return last


def test_a_model_moves_to_other_machines_through_the_registry(
    registry: Registry, serve: ServerFactory, redis_url: str, tmp_path: Path, docker_dir: Path
) -> None:
    first_home, second_home, third_home = (tmp_path / f"machine{i}" for i in (1, 2, 3))
    model = _build(first_home, tmp_path)
    reference = f"{registry.host}/team/weighted:v1"

    pushed = tungsten("push", "weighted:v1", reference, env=_env(first_home, docker_dir))
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"{reference}@{model.digest}"  # the registry computed our digest

    built_here = serve("weighted:v1", env=_env(first_home, docker_dir))
    expected = built_here.predict([{"x": 1}, {"x": 2}, {"x": 3}])
    assert [o["y"] for o in expected["outputs"]] == [7, 14, 21]
    built_here.stop()
    assert tungsten("remove", "weighted:v1", env=_env(first_home, docker_dir)).returncode == 0
    assert not ModelStore(first_home).list()

    pulled = tungsten("pull", reference, env=_env(second_home, docker_dir))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == "weighted:v1"
    listing = tungsten("models", env=_env(second_home, docker_dir)).stdout
    assert "weighted" in listing and model.digest[:19] in listing

    # Served by its reference in the second home: the store has it, so nothing is fetched.
    blob_gets = registry.requests("GET", "blobs")
    namespace = f"reg{uuid.uuid4().hex[:8]}"
    server = serve(reference, env=_env(second_home, docker_dir), namespace=namespace)
    assert registry.requests("GET", "blobs") == blob_gets
    outputs = server.predict([{"x": 1}, {"x": 2}, {"x": 3}])["outputs"]
    assert [o["y"] for o in outputs] == [o["y"] for o in expected["outputs"]]

    # A worker on a third machine, given the reference only, pulls the model and shares the work.
    log_path = tmp_path / "third-worker.log"
    worker = start_worker(reference, redis_url, namespace, _env(third_home, docker_dir), log_path)
    try:

        def two_workers() -> bool:
            assert worker.poll() is None, log_path.read_text()
            health = server.health()
            return health is not None and health.status_code == 200 and health.json()["ready_workers"] >= 2

        wait_for(two_workers, 60, what="the third machine's worker to join")
        ids = [
            server.client.post("/predictions", json=[{"x": x, "hold": 0.3}]).json()["prediction_id"] for x in range(6)
        ]
        results = [server.result(i) for i in ids]
        assert [r["outputs"][0]["y"] for r in results] == [7 * x for x in range(6)]
        assert len({r["outputs"][0]["worker_pid"] for r in results}) == 2
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log_path.read_text()
    assert [m.digest for m in ModelStore(third_home).list()] == [model.digest]
    assert f"Serving {reference} as weighted:v1" in log_path.read_text()


def test_pulling_the_same_digest_again_transfers_nothing(registry: Registry, tmp_path: Path, docker_dir: Path) -> None:
    model = _build(tmp_path / "builder", tmp_path)
    reference = f"{registry.host}/team/again:v1"
    assert tungsten("push", "weighted:v1", reference, env=_env(tmp_path / "builder", docker_dir)).returncode == 0
    assert (
        tungsten(
            "push", "weighted:v1", f"{registry.host}/team/again:v2", env=_env(tmp_path / "builder", docker_dir)
        ).returncode
        == 0
    )
    home = tmp_path / "puller"
    env = _env(home, docker_dir)

    before = registry.requests("GET", "blobs")
    first = tungsten("pull", reference, env=env)
    assert first.returncode == 0, first.stderr
    assert registry.requests("GET", "blobs") - before == 4  # three files and the config

    counts = {(m, k): registry.requests(m, k) for m in ("GET", "HEAD") for k in ("blobs", "manifests")}
    again = tungsten("pull", reference, env=env)
    assert again.returncode == 0 and "nothing transferred" in again.stderr, again.stderr
    by_digest = tungsten("pull", f"{registry.host}/team/again@{model.digest}", env=env)
    assert by_digest.stdout.strip() == "weighted:v1"
    other_tag = tungsten("pull", f"{registry.host}/team/again:v2", env=env)
    assert other_tag.stdout.strip() == "weighted:v2"
    after = {(m, k): registry.requests(m, k) for m in ("GET", "HEAD") for k in ("blobs", "manifests")}
    # Only the tags were asked about (HEAD, no content); no manifest or blob was downloaded.
    assert after[("GET", "blobs")] == counts[("GET", "blobs")]
    assert after[("GET", "manifests")] == counts[("GET", "manifests")]
    assert after[("HEAD", "manifests")] - counts[("HEAD", "manifests")] == 2
    assert sorted(m.reference for m in ModelStore(home).list()) == ["weighted:v1", "weighted:v2"]
    assert {m.digest for m in ModelStore(home).list()} == {model.digest}


def test_a_corrupted_blob_in_the_registry_is_refused(registry: Registry, tmp_path: Path, docker_dir: Path) -> None:
    model = _build(tmp_path / "builder", tmp_path)
    reference = f"{registry.host}/team/corrupted:v1"
    assert tungsten("push", "weighted:v1", reference, env=_env(tmp_path / "builder", docker_dir)).returncode == 0
    scale = next(f for f in model.metadata["files"] if f["path"] == "weights/scale.json")
    stored = registry.blob_file(scale["digest"])
    stored.write_bytes(stored.read_bytes().replace(b"7", b"9"))  # same size, other bytes

    home = tmp_path / "puller"
    _one_line_error(tungsten("pull", reference, env=_env(home, docker_dir)), "does not match its digest")
    assert [p for p in _snapshot(home) if p.count("/") > 1] == []  # no model, no half-pulled folder
    _one_line_error(
        tungsten("serve", reference, "-p", str(free_port()), env=_env(home, docker_dir)), "does not match its digest"
    )


def _push_raw(
    registry: Registry,
    repository_tag: str,
    files: dict[str, bytes],
    config: bytes,
    config_type: str = CONFIG_MEDIA_TYPE,
) -> None:
    """Put an artifact in the registry as another tool could have made it."""
    reference = RegistryReference.parse(f"{registry.host}/{repository_tag}")
    client = RegistryClient(reference, Settings(docker_config=Path("/nonexistent/config.json"))).open()
    layers = []
    for path, data in files.items():
        client.upload_blob(sha256_bytes(data), len(data), lambda data=data: io.BytesIO(data))
        layers.append(
            {
                "mediaType": FILE_MEDIA_TYPE,
                "digest": sha256_bytes(data),
                "size": len(data),
                "annotations": {TITLE_ANNOTATION: path},
            }
        )
    client.upload_blob(sha256_bytes(config), len(config), lambda: io.BytesIO(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "layers": layers,
        "config": {"mediaType": config_type, "digest": sha256_bytes(config), "size": len(config)},
    }
    client.put_manifest(canonical_json(manifest), MANIFEST_MEDIA_TYPE, reference.tag or "latest")


@pytest.fixture(scope="module")
def bad_artifacts(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad-artifacts")
    model = _build(folder / "home", folder, name="broken")
    config = json.loads(describe(model.metadata).config)
    code = (MODELS / "weighted" / "tungsten_model.py").read_bytes()
    _push_raw(registry, "team/image:v1", {"layer.tar": b"x"}, b"{}", "application/vnd.oci.image.config.v1+json")
    _push_raw(registry, "team/schema:v1", {"tungsten_model.py": code}, canonical_json({**config, "input_schema": "?"}))
    _push_raw(
        registry,
        "team/noimport:v1",
        {"tungsten_model.py": b"import a_module_that_does_not_exist\n"},
        canonical_json(config),
    )
    return {"image": "team/image:v1", "schema": "team/schema:v1", "noimport": "team/noimport:v1"}


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("{registry}/team/absent:v1", "No {registry}/team/absent:v1 in the registry"),
        ("127.0.0.1:{closed}/team/weighted:v1", "Cannot reach the registry 127.0.0.1:{closed}: connection refused"),
        ("{registry}/team/image:v1", "is not a Tungsten model: its config is application/vnd.oci.image.config.v1+json"),
        ("{registry}/team/schema:v1", "the model's metadata has no valid input_schema"),
        ("{registry}/team/noimport:v1", "cannot be loaded"),
        ("{registry}/Team/Upper:v1", "invalid repository"),
        ("{registry}/team/weighted:v1@sha256:123", "64 lowercase hex"),
    ],
)
def test_bad_pulls_are_one_line_and_leave_the_store_as_it_was(
    registry: Registry, bad_artifacts: dict[str, str], tmp_path: Path, docker_dir: Path, target: str, fragment: str
) -> None:
    home = tmp_path / "home"
    _build(home, tmp_path, name="already-here")
    before = _snapshot(home)
    values = {"registry": registry.host, "closed": str(free_port())}
    result = tungsten("pull", target.format(**values), env=_env(home, docker_dir))
    _one_line_error(result, fragment.format(**values))
    assert _snapshot(home) == before


def test_a_name_and_tag_taken_by_another_model_is_refused(registry: Registry, tmp_path: Path, docker_dir: Path) -> None:
    _build(tmp_path / "builder", tmp_path, scale=7)
    reference = f"{registry.host}/team/taken:v1"
    assert tungsten("push", "weighted:v1", reference, env=_env(tmp_path / "builder", docker_dir)).returncode == 0
    home = tmp_path / "home"
    local = _build(home, tmp_path, scale=8)
    before = _snapshot(home)
    _one_line_error(
        tungsten("pull", reference, env=_env(home, docker_dir)),
        f"weighted:v1 is already in the local store with another digest ({local.digest})",
    )
    assert _snapshot(home) == before


def test_tls_and_logins(secure_registry: Registry, tmp_path: Path, docker_dir: Path) -> None:
    home = tmp_path / "home"
    model = _build(home, tmp_path)
    reference = f"{secure_registry.host}/team/weighted:v1"
    trusted = {"TUNGSTEN_REGISTRY_CA_FILE": str(secure_registry.ca_file)}
    login = {"TUNGSTEN_REGISTRY_USERNAME": "alice", "TUNGSTEN_REGISTRY_PASSWORD": PASSWORD}

    _one_line_error(
        tungsten("push", "weighted:v1", reference, env=_env(home, docker_dir, **login)),
        f"TLS with {secure_registry.host} failed (certificate verify failed)",
    )
    _one_line_error(
        tungsten("push", "weighted:v1", reference, env=_env(home, docker_dir, **trusted)),
        f"{secure_registry.host} asks for a login",
    )
    wrong = tungsten(
        "push",
        "weighted:v1",
        reference,
        env=_env(home, docker_dir, **trusted, TUNGSTEN_REGISTRY_USERNAME="alice", TUNGSTEN_REGISTRY_PASSWORD="not-it"),
    )
    _one_line_error(wrong, "refused the login of 'alice' (from TUNGSTEN_REGISTRY_USERNAME)")
    _one_line_error(
        tungsten("push", "weighted:v1", reference, "--insecure", env=_env(home, docker_dir, **login)),
        "does not answer as an OCI registry",
    )

    pushed = tungsten("push", "weighted:v1", reference, env=_env(home, docker_dir, **trusted, **login))
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"{reference}@{model.digest}"
    assert PASSWORD not in pushed.stdout + pushed.stderr

    # `docker login` credentials: the Docker config's auths entry for the registry.
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    (docker_dir / "config.json").write_text(json.dumps({"auths": {secure_registry.host: {"auth": auth}}}))
    pulled = tungsten("pull", reference, env=_env(tmp_path / "second", docker_dir, **trusted))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == "weighted:v1"
    assert PASSWORD not in pulled.stdout + pulled.stderr and auth not in pulled.stdout + pulled.stderr


def _docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_available(), reason="needs a Docker engine")
def test_push_image_pushes_the_models_docker_image_too(registry: Registry, tmp_path: Path, docker_dir: Path) -> None:
    name = f"regimage-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    _build(home, tmp_path, name=name)
    context = tmp_path / "image"
    context.mkdir()
    (context / "hello.txt").write_text("a tiny stand-in for the model's image\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    assert (
        subprocess.run(
            ["docker", "build", "-q", "-t", f"{name}:v1", str(context)], check=False, capture_output=True
        ).returncode
        == 0
    )
    try:
        pushed = tungsten(
            "push", f"{name}:v1", f"{registry.host}/team/{name}:v1", "--image", env=_env(home, docker_dir)
        )
        assert pushed.returncode == 0, pushed.stderr
        assert f"Pushed the image {registry.host}/team/{name}:v1-image" in pushed.stderr
        manifest = httpx.head(
            f"http://{registry.host}/v2/team/{name}/manifests/v1-image",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        assert manifest.status_code == 200
    finally:
        subprocess.run(["docker", "image", "rm", f"{name}:v1"], check=False, capture_output=True)
    missing = tungsten("push", f"{name}:v1", f"{registry.host}/team/{name}:v2", "--image", env=_env(home, docker_dir))
    _one_line_error(missing, f"No Docker image {name}:v1")
