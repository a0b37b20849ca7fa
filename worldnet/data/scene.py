"""Procedural street scenes whose look is a smooth function of geography.

The synthetic world must behave like real street imagery in the one way
worldNET relies on: places that are near each other look alike, and the look
changes gradually across the globe. So every style parameter is either

* a deterministic function of real geography (latitude drives the sky colour,
  haze and sun height; latitude and continent drive the vegetation type; the
  country drives the driving side and the lane-marking colour), or
* a smooth random field on the sphere (a sum of random Fourier features of the
  3-D unit vector, correlation length ~3,000 km) for architecture, palettes and
  road surface, plus a small city-specific offset and a smaller per-place one,

and then per-image nuisance (heading, time of day, weather, occluders, noise,
JPEG quality) blurs it, so the task is learnable but not trivial.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from worldnet.geo.sphere import latlon_to_xyz

#: Countries (ISO alpha-2) that drive on the left in the synthetic world: frozen so that the world's bytes never change
#: (``worldnet.geo.regions.LEFT_HAND_TRAFFIC`` is the full list the pipeline uses).
LEFT_HAND_TRAFFIC = frozenset({"GB", "IE", "JP", "TH", "AU", "NZ", "ZA", "KE", "SG", "IN", "MY", "ID", "HK", "MT", "CY"})
#: Continents where a yellow centre line is the norm.
YELLOW_CENTRE_LINE = frozenset({"North America", "South America"})

_FIELD_NAMES = (
    "facade_hue",
    "facade_sat",
    "facade_light",
    "height",
    "window_density",
    "roof_pitch",
    "road_dark",
    "road_warm",
    "greenness",
    "tree_density",
    "awning_hue",
    "setback",
)
#: Spread of the city-specific and place-specific offsets added to the regional fields.
CITY_OFFSET = 0.26
PLACE_OFFSET = 0.04
_WORLD_SEED = 20230419  # the world's look is fixed; the dataset seed only resamples it
_N_FOURIER = 10
_FIELD_SCALE = 2.2  # radians^-1: correlation length ~ 1/2.2 rad ≈ 2,900 km


def _world_fields() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_WORLD_SEED)
    w = rng.normal(0.0, _FIELD_SCALE, size=(len(_FIELD_NAMES), _N_FOURIER, 3))
    b = rng.uniform(0, 2 * np.pi, size=(len(_FIELD_NAMES), _N_FOURIER))
    a = rng.normal(0.0, 1.0, size=(len(_FIELD_NAMES), _N_FOURIER)) / np.sqrt(_N_FOURIER / 2)
    return w, b, a


_W, _B, _A = _world_fields()


def style_fields(lat: float, lon: float) -> dict[str, float]:
    """Smooth regional style values in [0, 1] at a location."""
    xyz = latlon_to_xyz(lat, lon)
    raw = (_A * np.cos(_W @ xyz + _B)).sum(axis=1)
    vals = 0.5 + 0.5 * np.tanh(raw)
    return dict(zip(_FIELD_NAMES, (float(v) for v in vals), strict=True))


def _unit_hash(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Style:
    """Everything about a place's look that does not change between its photos."""

    lat: float
    continent: str
    left_hand: bool
    fields: dict[str, float]
    tree_kind: str  # palm | conifer | broadleaf | none


def place_style(lat: float, lon: float, continent: str, country: str, city: str, place_key: object) -> Style:
    """The style of one place: regional fields + city offset + small place offset."""
    fields = style_fields(lat, lon)
    city_rng = _unit_hash("city", city)
    place_rng = _unit_hash("place", city, place_key)
    for k in fields:
        off = city_rng.normal(0, CITY_OFFSET) + place_rng.normal(0, PLACE_OFFSET)
        fields[k] = float(np.clip(fields[k] + off, 0.0, 1.0))
    alat = abs(lat)
    # Vegetation by climate: tropics → palms, mid latitudes → broadleaf (palms in
    # warm, dry regions), high latitudes → conifers; arid places often have none.
    weights = {
        "palm": max(0.0, 1.0 - max(0.0, alat - 20) / 15),
        "broadleaf": max(0.0, 1.0 - abs(alat - 42) / 15),
        "conifer": max(0.0, (alat - 40) / 15),
        "none": 0.25 + 0.6 * (1 - fields["greenness"]),
    }
    if continent == "Oceania":
        weights["broadleaf"] += 0.5
    kinds = list(weights)
    p = np.array([weights[k] for k in kinds])
    tree_kind = kinds[int(place_rng.choice(len(kinds), p=p / p.sum()))]
    return Style(
        lat=lat,
        continent=continent,
        left_hand=country in LEFT_HAND_TRAFFIC,
        fields=fields,
        tree_kind=tree_kind,
    )


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return int(r * 255), int(g * 255), int(b * 255)


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> tuple[int, int, int]:
    arr = np.clip(np.array(rgb) + rng.normal(0, amount, 3), 0, 255).astype(int)
    return int(arr[0]), int(arr[1]), int(arr[2])


def render(style: Style, heading: int, rng: np.random.Generator, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """Render one photo of a place seen from ``heading`` degrees, with random nuisance."""
    W, H = size
    f = style.fields
    alat = abs(style.lat)
    sx, sy = W / 400.0, H / 300.0

    # --- nuisance for this photo
    tod = rng.uniform(0, 1)  # 0 = dawn/dusk, 1 = midday
    weather = rng.choice(["clear", "clear", "cloudy", "overcast", "haze"])
    horizon = int(H * rng.uniform(0.40, 0.50))
    vx = int(W / 2 + np.sin(np.radians(heading)) * W * 0.18 + rng.normal(0, W * 0.03))

    # --- sky: saturated blue in the tropics, paler and greyer towards the poles
    sky_top = _hsv(0.58 + 0.02 * (alat / 60), 0.75 - 0.45 * (alat / 70), 0.95 - 0.15 * (alat / 70))
    sky_low = _hsv(0.55, 0.25 - 0.15 * (alat / 70), 0.98)
    if weather in ("overcast", "haze"):
        g = 200 - int(40 * (alat / 70))
        sky_top = tuple(int(0.35 * c + 0.65 * g) for c in sky_top)  # type: ignore[assignment]
        sky_low = tuple(int(0.35 * c + 0.65 * (g + 20)) for c in sky_low)  # type: ignore[assignment]
    t = np.linspace(0, 1, horizon)[:, None, None]
    sky = (1 - t) * np.array(sky_top) + t * np.array(sky_low)
    ground = np.empty((H - horizon, 1, 3))
    ground[:] = _jitter(_hsv(0.1, 0.15, 0.45), rng, 6)
    base = np.concatenate([np.broadcast_to(sky, (horizon, W, 3)), np.broadcast_to(ground, (H - horizon, W, 3))])
    img = Image.fromarray(base.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)

    # --- sun: higher in the tropics and at midday
    if weather in ("clear", "cloudy"):
        elev = (90 - alat) / 90 * (0.4 + 0.6 * tod)
        sun_y = int(horizon * (1 - elev) * 0.9)
        sun_x = int((W * (0.5 + 0.5 * np.cos(np.radians(heading + 40)))) % W)
        r = int(14 * sx)
        d.ellipse([sun_x - r, sun_y - r, sun_x + r, sun_y + r], fill=(255, 250, 215))
    if weather == "cloudy":
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = rng.uniform(0, W), rng.uniform(0, horizon * 0.7)
            cw, ch = rng.uniform(30, 90) * sx, rng.uniform(8, 20) * sy
            d.ellipse([cx - cw, cy - ch, cx + cw, cy + ch], fill=(245, 245, 248))

    # --- distant skyline, hazy
    sky_haze = _hsv(0.6, 0.12, 0.75 - 0.1 * f["facade_light"])
    x = 0.0
    while x < W:
        bw = rng.uniform(12, 40) * sx
        bh = (8 + 70 * f["height"] ** 1.5 * rng.uniform(0.4, 1.2)) * sy
        d.rectangle([x, horizon - bh, x + bw, horizon], fill=sky_haze)
        x += bw

    # --- facades on both sides, receding to the vanishing point
    # facades stay in plausible masonry/render colours: brick, ochre, cream, grey, pastel
    fh = f["facade_hue"]
    facade_base = _hsv(
        0.02 + 0.13 * fh if fh < 0.8 else 0.55 + 0.5 * (fh - 0.8), 0.08 + 0.5 * f["facade_sat"], 0.35 + 0.6 * f["facade_light"]
    )
    window_rgb = _hsv(0.58, 0.3, 0.25 + 0.3 * (1 - tod))
    setback = 0.55 + 0.3 * f["setback"]
    for side in (-1, 1):
        edge = 0 if side < 0 else W
        pos = 0.0
        while pos < 0.92:
            width = rng.uniform(0.10, 0.26)
            nxt = min(pos + width, 0.97)
            x0 = edge + (vx - edge) * pos * setback
            x1 = edge + (vx - edge) * nxt * setback
            scale0 = 1 - pos * 0.9
            top = horizon - (40 + 190 * f["height"] ** 1.3 * rng.uniform(0.6, 1.3)) * sy * scale0
            bottom = horizon + (H - horizon) * 0.35 * scale0
            col = _jitter(facade_base, rng, 18)
            xa, xb = sorted((x0, x1))
            d.rectangle([xa, top, xb, bottom], fill=col, outline=_jitter(col, rng, 30))
            if f["roof_pitch"] > 0.55:
                peak = top - (xb - xa) * 0.35 * f["roof_pitch"]
                d.polygon([(xa, top), ((xa + xb) / 2, peak), (xb, top)], fill=_hsv(0.03, 0.6, 0.45))
            ncols = max(1, int((xb - xa) / (8 + 14 * (1 - f["window_density"])) / sx))
            nrows = max(1, int((bottom - top) / (12 + 16 * (1 - f["window_density"])) / sy))
            cw, ch = (xb - xa) / ncols, (bottom - top) / nrows
            for i in range(ncols):
                for j in range(nrows - 1):
                    wx, wy = xa + i * cw + cw * 0.25, top + j * ch + ch * 0.25
                    d.rectangle([wx, wy, wx + cw * 0.5, wy + ch * 0.45], fill=window_rgb)
            if f["awning_hue"] > 0.6 and rng.uniform() < 0.5:
                d.rectangle([xa, bottom - ch * 0.9, xb, bottom - ch * 0.6], fill=_hsv(f["awning_hue"], 0.7, 0.75))
            pos = nxt

    # --- road, sidewalks and markings
    road_rgb = _jitter(_hsv(0.08 * f["road_warm"], 0.25 * f["road_warm"], 0.55 - 0.35 * f["road_dark"]), rng, 5)
    walk_rgb = _hsv(0.1, 0.1, 0.7 - 0.2 * f["road_dark"])
    d.polygon([(-W * 0.3, H), (vx - 6 * sx, horizon), (vx + 6 * sx, horizon), (W * 1.3, H)], fill=walk_rgb)
    d.polygon([(W * 0.08, H), (vx - 3 * sx, horizon), (vx + 3 * sx, horizon), (W * 0.92, H)], fill=road_rgb)
    line_rgb = (235, 200, 40) if style.continent in YELLOW_CENTRE_LINE else (240, 240, 240)
    steps = 10
    for k in range(steps):
        if k % 2:
            continue
        a, b = k / steps, (k + 0.6) / steps
        ya, yb = H - (H - horizon) * a, H - (H - horizon) * b
        xa, xb = W / 2 + (vx - W / 2) * a, W / 2 + (vx - W / 2) * b
        wa, wb = 4 * sx * (1 - a), 4 * sx * (1 - b)
        d.polygon([(xa - wa, ya), (xb - wb, yb), (xb + wb, yb), (xa + wa, ya)], fill=line_rgb)

    # --- parked cars on the kerb of the driving side
    park = -1 if style.left_hand else 1
    for _ in range(int(rng.integers(1, 4))):
        a = rng.uniform(0.15, 0.75)
        cx = W / 2 + (vx - W / 2) * a + park * (W * 0.36) * (1 - a)
        cy = H - (H - horizon) * a
        s = (1 - a) * sx
        body = _hsv(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.9))
        d.rectangle([cx - 30 * s, cy - 26 * s, cx + 30 * s, cy], fill=body)
        d.rectangle([cx - 20 * s, cy - 38 * s, cx + 20 * s, cy - 24 * s], fill=_jitter(body, rng, 10))

    # --- vegetation along the sidewalks
    green = _hsv(0.22 + 0.12 * f["greenness"], 0.35 + 0.45 * f["greenness"], 0.3 + 0.35 * f["greenness"])
    if style.continent == "Oceania":
        green = _hsv(0.2, 0.25, 0.45)  # grey-green eucalypts
    if style.tree_kind != "none":
        n_trees = int(1 + 6 * f["tree_density"] * rng.uniform(0.5, 1.0))
        for _ in range(n_trees):
            side = rng.choice([-1, 1])
            a = rng.uniform(0.05, 0.8)
            edge = 0 if side < 0 else W
            tx = edge + (vx - edge) * a * 0.7 + side * (-W * 0.05)
            base_y = H - (H - horizon) * a * 0.95
            s = (1 - a) * sy
            _tree(d, style.tree_kind, tx, base_y, s, _jitter(green, rng, 12))

    # --- occluders: a pole, a sign or a passing bus close to the camera
    occ = rng.choice(["none", "pole", "sign", "bus"], p=[0.5, 0.22, 0.2, 0.08])
    if occ == "pole":
        px = rng.uniform(0, W)
        d.rectangle([px, H * 0.1, px + 6 * sx, H], fill=(60, 60, 60))
    elif occ == "sign":
        px, py = rng.uniform(0, W), rng.uniform(H * 0.3, H * 0.6)
        d.rectangle([px, py, px + 30 * sx, py + 22 * sy], fill=_hsv(rng.uniform(), 0.8, 0.8))
    elif occ == "bus":
        bx = rng.uniform(-W * 0.3, W * 0.6)
        d.rectangle([bx, H * 0.45, bx + W * 0.5, H * 0.95], fill=_hsv(rng.uniform(), 0.6, 0.7))

    # --- light, weather and sensor noise
    arr = np.asarray(img, dtype=np.float32)
    light = 0.6 + 0.45 * tod
    arr *= light
    if tod < 0.25:  # golden hour tint
        arr *= np.array([1.08, 0.98, 0.85], dtype=np.float32)
    haze = {"haze": 0.35, "overcast": 0.15}.get(str(weather), 0.0) + 0.1 * (alat / 70)
    arr = arr * (1 - haze) + haze * 205.0
    # 4x4 blocks of noise, rounded up so that a side not divisible by 4 is covered (same draws when it is)
    noise = rng.normal(0, rng.uniform(2, 8), size=(-(-H // 4), -(-W // 4), 1)).astype(np.float32)
    arr += np.repeat(np.repeat(noise, 4, axis=0), 4, axis=1)[:H, :W]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _tree(d: ImageDraw.ImageDraw, kind: str, x: float, y: float, s: float, green: tuple[int, int, int]) -> None:
    trunk = (90, 65, 40)
    if kind == "palm":
        h = 150 * s
        d.line([(x, y), (x + 6 * s, y - h)], fill=trunk, width=max(1, int(5 * s)))
        for ang in np.linspace(0, 2 * np.pi, 7, endpoint=False):
            d.line(
                [(x + 6 * s, y - h), (x + 6 * s + np.cos(ang) * 40 * s, y - h + abs(np.sin(ang)) * 25 * s)],
                fill=green,
                width=max(1, int(4 * s)),
            )
    elif kind == "conifer":
        h = 120 * s
        d.rectangle([x - 3 * s, y - 15 * s, x + 3 * s, y], fill=trunk)
        for k in range(3):
            top = y - h + k * h * 0.25
            d.polygon([(x, top), (x - 28 * s * (k + 1) / 3, top + h * 0.45), (x + 28 * s * (k + 1) / 3, top + h * 0.45)], fill=green)
    else:  # broadleaf
        h = 110 * s
        d.rectangle([x - 4 * s, y - h * 0.5, x + 4 * s, y], fill=trunk)
        d.ellipse([x - 35 * s, y - h, x + 35 * s, y - h * 0.35], fill=green)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Encode as baseline JPEG; the same pixels and quality always give the same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), optimize=False)
    return buf.getvalue()


__all__ = ["Style", "encode_jpeg", "place_style", "render", "style_fields"]
