"""``python -m benchmark download tc_primed``: fetch a subset of the public TC-PRIMED bucket.

TC-PRIMED lives on NOAA Open Data (NODD), in the anonymous S3 bucket ``noaa-nesdis-tcprimed-pds``,
as ``v01r01/<final|preliminary>/<season>/<basin>/<NN>/TCPRIMED_v01r01-final_<ATCFID>_<SENSOR>_
<PLATFORM>_<ORBIT>_<YYYYMMDDhhmmss>.nc`` (one file per overpass) plus one environmental file per
storm, ``TCPRIMED_v01r01-final_<ATCFID>_env_s<start>_e<end>.nc`` (ERA5; the task does not read it).

* Which files: the maintainers' client ``tcprimedapi`` (``Client.query`` with season, basin,
  cyclone number and file type) names the keys. It returns keys only, so one listing of the same
  prefix through the client's own boto3 resource adds each object's size and ETag. The count and
  the total size are printed before anything is fetched (``--dry-run`` stops there).
* Fetching: through the client's anonymous boto3 S3 client, with our own loop rather than
  ``Client.download``, which writes straight into the final file (an interrupted run leaves a
  truncated ``.nc`` that ``prepare`` would then read), cannot resume, does not check the bytes and
  fetches everything again on every run. Here each object is written to
  ``<raw>.partial/<key>.<etag>.part``; after an interruption the next run resumes it with a ranged
  GET (``If-Match`` the listed ETag). Once its size and ETag match (the MD5 for a single-part
  upload; the multipart form is recomputed for the usual part sizes, else the size alone is
  checked and reported) it is renamed to ``<raw>/<key>``. The raw folder only ever holds
  complete, verified files, in the bucket's own layout; files already there with the listed size
  are skipped.
* Endpoint: ``--endpoint-url``, else ``$TCPRIMED_S3_ENDPOINT``, else boto3's own
  ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS (tests point it at a local mock).

Then ``python -m benchmark prepare tc_primed --raw <raw> --out <data root>/tc_primed/prepared``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.data import resolve_data_root
from benchmark.errors import BenchmarkError

from ..common.download import ChecksumError, DownloadError, file_digest
from .reader import ENV_RE, FILE_RE
from .sensors import SOURCES

BUCKET = "noaa-nesdis-tcprimed-pds"
VERSION = "v01r01"
STAGES = ("final", "preliminary")
ENDPOINT_ENV = "TCPRIMED_S3_ENDPOINT"
#: Sensors of the task's 11 sources; by default only their sensor/platform pairs are fetched.
TASK_SENSORS: tuple[str, ...] = tuple(sorted({s.sensor for s in SOURCES.values()}))
KEY_RE = re.compile(r"^v\d{2}r\d{2}/(final|preliminary)/\d{4}/[A-Z]{2}/\d{2}/TCPRIMED_[A-Za-z0-9_.-]+\.nc$")
_MIB = 1 << 20
_TRANSIENT_CODES = frozenset({"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
INSTALL_HINT = "pip install 'satbench[tc_primed]' (tcprimedapi and boto3)"


@dataclass(frozen=True)
class RemoteFile:
    """One object of the bucket: key, size in bytes and ETag (without quotes)."""

    key: str
    size: int
    etag: str

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def storm(self) -> str:
        """``<season>/<basin>/<NN>`` of the key."""
        return "/".join(self.key.split("/")[2:5])

    @property
    def kind(self) -> str:
        """``SENSOR_PLATFORM`` of an overpass file, ``env`` for the environmental file, else ``?``."""
        if ENV_RE.match(self.name):
            return "env"
        m = FILE_RE.match(self.name)
        return f"{m['sensor']}_{m['platform']}" if m else "?"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------
# listing (tcprimedapi)
# --------------------------------------------------------------------------------------------------


def _boto() -> tuple[Any, Any]:
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
    except ImportError:
        raise BenchmarkError(f"download tc_primed needs boto3: {INSTALL_HINT}") from None
    return boto3, Config(signature_version=UNSIGNED, retries={"mode": "standard", "max_attempts": 3})


def s3_client(endpoint_url: str | None = None) -> Any:
    """An anonymous S3 client (``endpoint_url``, else ``$TCPRIMED_S3_ENDPOINT``, else boto3's default)."""
    boto3, config = _boto()
    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get(ENDPOINT_ENV) or None, config=config)


def api_client(endpoint_url: str | None = None) -> Any:
    """A ``tcprimedapi.Client`` (quiet), on ``endpoint_url`` / ``$TCPRIMED_S3_ENDPOINT`` when given."""
    try:
        import tcprimedapi
    except ImportError:
        raise BenchmarkError(f"download tc_primed needs the maintainers' client tcprimedapi: {INSTALL_HINT}") from None
    api = tcprimedapi.Client(verbose=False)
    endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    if endpoint:  # the client reads boto3's AWS_ENDPOINT_URL_S3 by itself, but takes no endpoint argument
        boto3, config = _boto()
        api.client = boto3.client("s3", endpoint_url=endpoint, config=config)
        api.bucket = boto3.resource("s3", endpoint_url=endpoint, config=config).Bucket(BUCKET)
    return api


def describe(season: int | str, basin: str, *, sensors: Sequence[str] | None = None, storms: Sequence[int] | None = None,
             env: bool = False, stage: str = "final") -> str:
    """``TC-PRIMED v01r01 final, season 2018, basin AL, storm 06, sensors GMI`` for messages."""
    what = f"TC-PRIMED {VERSION} {stage}, season {season}, basin {basin.upper()}"
    if storms:
        what += f", storm{'s' if len(set(storms)) > 1 else ''} {', '.join(f'{n:02d}' for n in sorted(set(storms)))}"
    if not sensors:
        what += f", the task's sensors ({' '.join(TASK_SENSORS)})"
    elif [s.lower() for s in sensors] == ["all"]:
        what += ", all sensors"
    else:
        what += f", sensor{'s' if len(sensors) > 1 else ''} {' '.join(s.upper() for s in sensors)}"
    return what + (" and environmental files" if env else "")


def list_files(season: int | str, basin: str, *, sensors: Sequence[str] | None = None, storms: Sequence[int] | None = None,
               env: bool = False, stage: str = "final", endpoint_url: str | None = None, api: Any = None) -> list[RemoteFile]:
    """The bucket's files for a season and basin (optionally some storms and sensors), sorted by key.

    ``sensors`` are tcprimedapi file types (sensor or platform names, e.g. ``GMI``, ``F17``) or
    ``["all"]``; by default the task's 11 sensor/platform pairs. ``env`` adds each storm's
    environmental file. A subset with no file raises :class:`BenchmarkError` saying what is there.
    """
    season, basin = str(season), basin.upper()
    if stage not in STAGES:
        raise BenchmarkError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    every = bool(sensors) and [s.lower() for s in sensors] == ["all"]
    explicit = None if every or not sensors else [s.upper() for s in sensors]
    storms = sorted({int(n) for n in storms}) if storms else None
    if storms and not all(1 <= n <= 49 for n in storms):
        raise BenchmarkError(f"--storm is the storm's annual number, 1 to 49; got {', '.join(map(str, storms))}")
    api = api if api is not None else api_client(endpoint_url)
    request: dict[str, Any] = {"season": [season], "basin": [basin], "version": [VERSION], "version_type": [stage]}
    if storms:
        request["cyclone_number"] = [f"{n:02d}" for n in storms]
    if not every:
        request["file_type"] = [*(explicit or TASK_SENSORS), *(["env"] if env else [])]
    what = describe(season, basin, sensors=sensors, storms=storms, env=env, stage=stage)
    from botocore.exceptions import BotoCoreError, ClientError

    prefixes = [f"{VERSION}/{stage}/{season}/{basin}/" + (f"{n:02d}/" if storms else "") for n in (storms or [0])]
    try:
        api.query(request)
        keys = list(dict.fromkeys(api.object_keys))  # a key matching two file types is listed twice
        listed = {o.key: RemoteFile(o.key, int(o.size), o.e_tag.strip('"')) for p in prefixes for o in api.bucket.objects.filter(Prefix=p)}
    except (ValueError, TypeError) as exc:  # tcprimedapi's validation of the request
        valid = ""
        if "file type" in str(exc):
            from tcprimedapi import api as tapi

            valid = f" (sensors: {' '.join(tapi.TCPRIMED_SENSORS)}; platforms: {' '.join(tapi.TCPRIMED_PLATFORMS)}; or all)"
        raise BenchmarkError(f"{what}: tcprimedapi refused the request: {exc}{valid}") from None
    except (BotoCoreError, ClientError) as exc:
        raise BenchmarkError(f"cannot list s3://{BUCKET}/{prefixes[0]}: {' '.join(str(exc).split())}") from None
    files = sorted((listed[k] for k in keys if k in listed), key=lambda f: f.key)
    if not env:
        files = [f for f in files if f.kind != "env"]
    if explicit is None and not every:  # the task's pairs only (e.g. no SSMI on F08/F10)
        files = [f for f in files if f.kind == "env" or f.kind in SOURCES]
    for f in files:
        if not KEY_RE.match(f.key):
            raise BenchmarkError(f"s3://{BUCKET}/{f.key}: unexpected key layout; refusing to write it")
    if not files:
        if not listed:
            raise BenchmarkError(f"{what}: no files under s3://{BUCKET}/{prefixes[0]} (no such season/basin/storm in the bucket)")
        kinds = sorted({f.kind for f in listed.values()})
        raise BenchmarkError(f"{what}: none of the {len(listed)} files under s3://{BUCKET}/{prefixes[0]} match "
                             f"(there: {' '.join(kinds)})")
    return files


# --------------------------------------------------------------------------------------------------
# verification (size + ETag)
# --------------------------------------------------------------------------------------------------


def _multipart_etag(path: Path, part_size: int) -> str:
    digests = []
    with open(path, "rb") as fh:
        while block := fh.read(part_size):
            digests.append(hashlib.md5(block, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def _part_sizes(size: int, parts: int) -> list[int]:
    """Whole-MiB part sizes that cut ``size`` bytes into exactly ``parts`` parts (8 MiB, boto3's and
    the AWS CLI's default, first); at most 16."""
    if parts == 1:
        return [max(size, 1)]
    lo, hi = math.ceil(size / parts), math.ceil(size / (parts - 1)) - 1
    mib = [m * _MIB for m in range(max(1, math.ceil(lo / _MIB)), hi // _MIB + 1)]
    return sorted(mib, key=lambda p: (p != 8 * _MIB, p))[:16]


def verify(path: Path, remote: RemoteFile) -> str:
    """Check ``path`` against the listing; return ``"md5"``, ``"etag"`` (multipart) or ``"size"`` (only
    the size could be checked). A mismatch raises :class:`ChecksumError`."""
    url = f"s3://{BUCKET}/{remote.key}"
    got = path.stat().st_size
    if got != remote.size:
        raise ChecksumError(f"{url}: fetched {got} bytes, the bucket lists {remote.size}", path=path, algo="size",
                            expected=str(remote.size), actual=str(got))
    etag = remote.etag.lower()
    if re.fullmatch(r"[0-9a-f]{32}", etag):
        md5 = file_digest(path, "md5")
        if md5 != etag:
            raise ChecksumError(f"{url}: md5 of the fetched bytes is {md5}, the bucket's ETag is {etag}", path=path, algo="md5",
                                expected=etag, actual=md5)
        return "md5"
    m = re.fullmatch(r"[0-9a-f]{32}-(\d+)", etag)
    if m and any(_multipart_etag(path, p) == etag for p in _part_sizes(remote.size, int(m[1]))):
        return "etag"
    return "size"  # a multipart upload with an unusual part size, or another checksum scheme


# --------------------------------------------------------------------------------------------------
# fetching (ranged, resumable GETs)
# --------------------------------------------------------------------------------------------------


def staging_dir(raw: Path) -> Path:
    return raw.with_name(raw.name + ".partial")


def part_path(raw: Path, remote: RemoteFile) -> Path:
    """Where an unfinished transfer of ``remote`` is kept (outside ``raw``; named by its ETag, so a
    copy of an older version of the object is never resumed)."""
    return staging_dir(raw) / f"{remote.key}.{re.sub(r'[^A-Za-z0-9-]', '', remote.etag)}.part"


def _transient(exc: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return err.get("Code") in _TRANSIENT_CODES or status in _TRANSIENT_CODES
    return isinstance(exc, BotoCoreError | ConnectionError | TimeoutError)


def fetch_one(client: Any, remote: RemoteFile, raw: Path, *, retries: int = 3, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    """Bring ``<raw>/<key>`` to the verified content of ``remote``; return how it was verified."""
    from botocore.exceptions import BotoCoreError, ClientError

    url = f"s3://{BUCKET}/{remote.key}"
    part = part_path(raw, remote)
    part.parent.mkdir(parents=True, exist_ok=True)
    for stale in part.parent.glob(f"{remote.name}.*.part"):  # earlier versions of the object
        if stale != part:
            stale.unlink()
    failures, last = 0, ""
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > remote.size:
            part.unlink()
            have = 0
        if have == remote.size:
            break
        request = {"Bucket": BUCKET, "Key": remote.key, "IfMatch": f'"{remote.etag}"'}
        if have:
            request["Range"] = f"bytes={have}-"
        try:
            response = client.get_object(**request)
            if have and not str(response.get("ContentRange", "")).startswith(f"bytes {have}-"):
                have = 0  # the range was not honoured: start again
            with open(part, "ab" if have else "wb") as fh:
                for chunk in response["Body"].iter_chunks(_MIB):
                    fh.write(chunk)
                    on_bytes(len(chunk))
            last = f"the transfer ended after {part.stat().st_size} of {remote.size} bytes"
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "PreconditionFailed":
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url} changed in the bucket since it was listed; run again", url=url) from None
            if code == "InvalidRange":
                part.unlink(missing_ok=True)
                continue
            if not _transient(exc):
                part.unlink(missing_ok=True)
                raise DownloadError(f"cannot fetch {url}: {code} {exc.response.get('Error', {}).get('Message', '')}".rstrip(),
                                    url=url) from None
            last = " ".join(str(exc).split())
        except (BotoCoreError, ConnectionError, TimeoutError) as exc:
            last = " ".join(str(exc).split()) or type(exc).__name__
        now = part.stat().st_size if part.exists() else 0
        if now == remote.size:
            break
        failures = 1 if now > have else failures + 1  # progress resets the count
        if failures > retries:
            raise DownloadError(f"cannot fetch {url}: {failures} failures in a row, last: {last} "
                                f"({now} bytes kept in {part}; run again to resume)", url=url)
    try:
        how = verify(part, remote)
    except ChecksumError as exc:
        part.unlink()
        raise ChecksumError(f"{exc}; the partial copy was deleted, run again to fetch it anew", path=exc.path,
                            algo=exc.algo, expected=exc.expected, actual=exc.actual) from None
    dest = raw / remote.key
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    return how


def _prune(folder: Path) -> None:
    """Remove empty folders under (and including) ``folder``."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def plan(files: Iterable[RemoteFile], raw: Path) -> tuple[list[RemoteFile], list[RemoteFile]]:
    """(already there with the listed size, to fetch)."""
    have, todo = [], []
    for f in files:
        dest = raw / f.key
        (have if dest.is_file() and dest.stat().st_size == f.size else todo).append(f)
    return have, todo


def fetch(files: Sequence[RemoteFile], raw: Path, *, client: Any = None, endpoint_url: str | None = None, retries: int = 3,
          progress: bool = True) -> dict[str, int]:
    """Fetch every file not already in ``raw``; returns counts (fetched, present, replaced, and by check)."""
    from tqdm.auto import tqdm

    raw = Path(raw)
    client = client if client is not None else s3_client(endpoint_url)
    present, todo = plan(files, raw)
    counts = {"fetched": 0, "present": len(present), "replaced": 0, "md5": 0, "etag": 0, "size": 0}
    with tqdm(total=sum(f.size for f in todo), unit="B", unit_scale=True, unit_divisor=1024, desc="tc_primed",
              disable=not progress) as bar:
        for f in todo:
            bar.update(part_path(raw, f).stat().st_size if part_path(raw, f).is_file() else 0)
            counts["replaced"] += (raw / f.key).exists()
            counts[fetch_one(client, f, raw, retries=retries, on_bytes=bar.update)] += 1
            counts["fetched"] += 1
    _prune(staging_dir(raw))
    return counts


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List the public TC-PRIMED bucket's files for a season and basin (and optionally storms and sensors), "
                          "print their count and size, then fetch them (resumable, verified) into the raw folder that "
                          "`prepare tc_primed` reads.")
    parser.add_argument("--season", required=True, help="four-digit season (Southern Hemisphere seasons start on 1 July of the year before)")
    parser.add_argument("--basin", required=True, help="AL, EP, CP, WP, IO or SH")
    parser.add_argument("--storm", type=int, action="append", default=None, metavar="N",
                        help="the storm's annual number in that season and basin (repeatable; default: every storm)")
    parser.add_argument("--sensor", action="append", default=None,
                        help=f"sensor or platform, as tcprimedapi names them (GMI, AMSR2, SSMIS, F17, ...; repeatable), or all "
                             f"(default: the task's 11 sources, sensors {' '.join(TASK_SENSORS)})")
    parser.add_argument("--env", action="store_true", help="also fetch each storm's environmental (ERA5) file; the task does not read it")
    parser.add_argument("--stage", default="final", choices=STAGES, help="version type (default: final)")
    parser.add_argument("--data-root", type=Path, default=None, help="data root ($BENCHMARK_DATA, then ~/.cache/benchmark)")
    parser.add_argument("--raw", type=Path, default=None, help="where the files go, in the bucket's layout (default: <data root>/tc_primed/raw)")
    parser.add_argument("--dry-run", action="store_true", help="list the files and their size, fetch nothing")
    parser.add_argument("--endpoint-url", default=None, help=f"S3 endpoint (default: ${ENDPOINT_ENV}, else AWS)")
    parser.add_argument("--retries", type=int, default=3, help="failures in a row per file before giving up (default 3)")
    parser.add_argument("--no-progress", action="store_true")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def run_download(args: argparse.Namespace) -> int:
    data_root = resolve_data_root(args.data_root)
    raw = Path(args.raw) if args.raw is not None else data_root / "tc_primed" / "raw"
    files = list_files(args.season, args.basin, sensors=args.sensor, storms=args.storm, env=args.env, stage=args.stage,
                       endpoint_url=args.endpoint_url)
    present, todo = plan(files, raw)
    storms = len({f.storm for f in files})
    what = describe(args.season, args.basin, sensors=args.sensor, storms=args.storm, env=args.env, stage=args.stage)
    print(f"{what}: {_n(len(files), 'file')}, {human(sum(f.size for f in files))} ({_n(storms, 'storm')}); "
          f"already in {raw}: {_n(len(present), 'file')}; to fetch: {_n(len(todo), 'file')}, {human(sum(f.size for f in todo))}",
          flush=True)
    if args.dry_run:
        for f in files:
            print(f"  {'here ' if f in present else 'fetch'} {human(f.size):>10}  {f.key}")
        print("dry run: nothing fetched")
        return 0
    try:
        counts = fetch(files, raw, endpoint_url=args.endpoint_url, retries=args.retries, progress=not args.no_progress)
    except (ChecksumError, DownloadError) as exc:
        raise BenchmarkError(str(exc)) from None
    except OSError as exc:  # disk full, permissions
        raise BenchmarkError(f"cannot write under {raw}: {exc}") from None
    checks = f"{counts['md5'] + counts['etag']} verified by ETag"
    if counts["size"]:
        checks += f", {counts['size']} by size only (multipart ETag with an unusual part size)"
    replaced = f" ({counts['replaced']} replaced a copy of another size)" if counts["replaced"] else ""
    print(f"fetched {_n(counts['fetched'], 'file')}{replaced} into {raw} ({checks}); {counts['present']} already there")
    print(f"next: python -m benchmark prepare tc_primed --raw {raw} --out {data_root / 'tc_primed' / 'prepared'}")
    return 0
