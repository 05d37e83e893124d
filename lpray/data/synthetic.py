"""A synthetic pose dataset with exact ground truth on every video frame.

Real datasets only say where the keypoints are on a few hundred labeled frames, so they cannot show
whether semi-supervised training helps on the frames nobody labeled. This generator renders a
mouse-like animal seen from above (and optionally from the side, in a mirror-style second view)
whose pose is known exactly on every frame of every video, including unseen test videos.

The pose is low-dimensional by construction: a rigid body plan, moved by position, heading, a gait
phase that swings the paws, a head yaw and two tail bends. It is not trivial to track: sensor noise,
motion blur, a moving occluder, low-contrast tail and ears, paw-like specks on the floor and
identical left and right limbs give the unsupervised losses something to fix.

Coordinates: the centre of pixel column ``j`` is ``x = j`` and of row ``i`` is ``y = i``.

Layout written by :func:`make_synthetic_project`::

    root/
      CollectedData.csv                labeled frames, 3-row header, NaN where a keypoint is hidden
      labeled-data/<stem>/img%08d.png  labeled frames and their context neighbours t-2..t+2
      videos/<stem>.mp4                training videos (labeled frames are drawn from these)
      videos-test/<stem>.mp4           unseen videos, never labeled
      truth/<stem>.csv                 true x, y and visible for every frame of every video
      project.yaml                     names, view groups, sizes, video lists, spec and its hash
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import yaml
from numpy.typing import ArrayLike
from PIL import Image
from scipy.signal import lfilter

from lpray.data import render
from lpray.data.synthetic_project import (
    CODECS,
    CONTEXT,
    GENERATOR_VERSION,
    SyntheticProject,
    SyntheticSpec,
    load_synthetic_project,
)
from lpray.io.tables import arrays_to_table, read_pose_csv, write_pose_csv

PARTS = (
    "nose",
    "earL",
    "earR",
    "pawFL",
    "pawFR",
    "pawHL",
    "pawHR",
    "tailBase",
    "tailMid",
    "tailTip",
)
SUBSTEPS = 8  # motion is integrated on a grid of 1/8 frame
BLUR_STEPS = (-3, 0, 3)  # sub-frame samples averaged for motion blur (+-3/8 frame exposure)
CHUNK = 64  # frames rendered at once
FLOOR = 0.8  # side view: z = 0 lies at this fraction of the view height


# ------------------------------------------------------------------------------------------------
# Body plan and motion


@dataclass(frozen=True)
class Body:
    """Body plan in pixels of a 128-pixel view; u points forward, v to the right, z up.

    Every length scales with the view size, so the animal keeps its proportions.
    """

    body_a: float = 13.0  # body ellipse semi-axes (length, width, height)
    body_b: float = 7.5
    body_c: float = 5.5
    body_z: float = 9.0
    neck_u: float = 11.0  # head yaw pivots here
    head_u: float = 6.0  # head centre, ahead of the neck
    head_a: float = 7.0
    head_b: float = 5.2
    head_c: float = 4.5
    head_z: float = 10.0
    nose_r: float = 1.6
    ear_u: float = 2.5
    ear_v: float = 5.2
    ear_r: float = 2.8
    ear_z: float = 14.0
    front_u: float = 8.0
    front_v: float = 8.0
    hind_u: float = -7.0
    hind_v: float = 9.0
    stride: float = 3.5  # paw swing amplitude along u
    lift: float = 3.0  # paw lift in the side view
    paw_r: float = 2.4
    leg_v: float = 4.0  # shoulders and hips, where side-view legs start
    leg_z: float = 7.0
    leg_r: float = 1.3
    tail_u: float = -13.0
    tail_len: float = 11.0
    tail_r: tuple[float, float, float] = (2.2, 1.5, 0.9)
    tail_z: tuple[float, float, float] = (6.0, 4.0, 2.5)
    tail_raise: float = 3.0  # how far the tail tip can lift in the side view


@dataclass(frozen=True)
class Shades:
    """Grey levels before lighting gain and noise; paws and distractors look alike on purpose."""

    floor: float = 70.0
    floor_texture: float = 14.0
    wall: float = 55.0  # side view, above the floor line
    ground: float = 92.0  # side view, below the floor line
    body: float = 143.0
    body_gradient: float = 12.0  # brighter towards the head, so heading is visible
    head: float = 156.0
    ear: float = 118.0
    nose: float = 104.0
    paw: float = 188.0
    leg: float = 140.0
    tail: tuple[float, float] = (126.0, 106.0)
    occluder: float = 36.0
    distractor: float = 180.0


BODY = Body()
Project = Callable[[np.ndarray], np.ndarray]  # 3-D points (n, 3) -> view pixels (n, 2)
SHADES = Shades()
PAW_PHASE = {"pawFL": 0.0, "pawHR": 0.0, "pawFR": math.pi, "pawHL": math.pi}  # a trot


@dataclass(frozen=True)
class Motion:
    """The animal's state on the fine time grid (``SUBSTEPS`` samples per frame).

    Grid index ``SUBSTEPS * t + SUBSTEPS // 2`` is frame ``t``; the half-frame lead leaves room
    for motion-blur samples before frame 0.
    """

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray  # radians, unwrapped
    phase: np.ndarray  # gait phase, radians, unwrapped
    head_yaw: np.ndarray
    tail_bend: np.ndarray  # (n, 2) bend at tailBase and at tailMid
    tail_raise: np.ndarray  # 0..1


def frame_to_grid(frames: np.ndarray) -> np.ndarray:
    """Grid index of each frame number."""
    return np.asarray(frames) * SUBSTEPS + SUBSTEPS // 2


def _ou(
    rng: np.random.Generator, n: int, tau: float, sigma: float, mean: float = 0.0
) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck samples on the grid: smooth, bounded-variance wandering."""
    a = math.exp(-1.0 / (tau * SUBSTEPS))
    start = sigma * rng.standard_normal()
    steps = sigma * math.sqrt(1.0 - a * a) * rng.standard_normal(n)
    return lfilter([1.0], [1.0, -a], steps, zi=[a * start])[0] + mean


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def simulate_motion(rng: np.random.Generator, n_frames: int, height: int, width: int) -> Motion:
    """Random smooth walk that stays in a ``height`` x ``width`` view.

    Speed and turning rate wander (OU processes); when the point a little ahead leaves the safe
    box the animal steers towards the centre and slows, so it never needs to be teleported.
    """
    scale = min(height, width) / 128.0
    n = (n_frames + 1) * SUBSTEPS
    dt = 1.0 / SUBSTEPS
    speed = np.clip(_ou(rng, n, 40.0, 1.1 * scale, 1.5 * scale), 0.0, 3.2 * scale)
    wander = _ou(rng, n, 20.0, 0.05)
    margin, look = 28.0 * scale, 22.0 * scale
    lo_x, hi_x, lo_y, hi_y = margin, width - 1 - margin, margin, height - 1 - margin
    x, y = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    heading = rng.uniform(-math.pi, math.pi)
    xs, ys, hs, vs, ws = (np.empty(n) for _ in range(5))
    for i in range(n):
        ax, ay = x + look * math.cos(heading), y + look * math.sin(heading)
        out = max(lo_x - ax, ax - hi_x, lo_y - ay, ay - hi_y, 0.0) / margin
        push = min(out, 1.0)
        home = math.atan2((height - 1) / 2 - y, (width - 1) / 2 - x)
        omega = min(max(wander[i] + 0.15 * push * _wrap(home - heading), -0.15), 0.15)
        v = speed[i] * (1.0 - 0.6 * push)
        heading += omega * dt
        x = min(max(x + v * math.cos(heading) * dt, 0.5 * margin), width - 1 - 0.5 * margin)
        y = min(max(y + v * math.sin(heading) * dt, 0.5 * margin), height - 1 - 0.5 * margin)
        xs[i], ys[i], hs[i], vs[i], ws[i] = x, y, heading, v, omega
    # The head turns into a turn and the tail swings out of it, lagging a little.
    lag = math.exp(-1.0 / (4 * SUBSTEPS))
    turn = lfilter([1.0 - lag], [1.0, -lag], ws)
    bend = np.stack([_ou(rng, n, 25.0, 0.3) - 3.0 * turn, _ou(rng, n, 15.0, 0.35)], axis=1)
    return Motion(
        x=xs,
        y=ys,
        heading=hs,
        phase=np.cumsum(vs * dt) / (BODY.stride * scale) + rng.uniform(0, 2 * math.pi),
        head_yaw=_ou(rng, n, 15.0, 0.2) + 1.5 * turn,
        tail_bend=bend,
        tail_raise=1.0 / (1.0 + np.exp(-2.0 * _ou(rng, n, 30.0, 1.0))),
    )


@dataclass(frozen=True)
class Pose:
    """3-D points (n, 3) in view pixels (x, y on the floor, z up) and the angles to draw them."""

    points: dict[str, np.ndarray]
    heading: np.ndarray
    head_angle: np.ndarray


def pose_at(motion: Motion, grid: np.ndarray, scale: float) -> Pose:
    """Where every part of the body is at the given grid indices."""
    b = BODY
    theta = motion.heading[grid]
    head_angle = theta + motion.head_yaw[grid]
    cos, sin = np.cos(theta), np.sin(theta)
    cx, cy = motion.x[grid], motion.y[grid]

    def body(u: ArrayLike, v: ArrayLike, z: ArrayLike) -> np.ndarray:
        u, v, z = (np.broadcast_to(np.asarray(a, float) * scale, cx.shape) for a in (u, v, z))
        return np.stack([cx + u * cos - v * sin, cy + u * sin + v * cos, z], axis=1)

    neck = body(b.neck_u, 0.0, 0.0)

    def head(u: float, v: float, z: float) -> np.ndarray:
        hc, hs = np.cos(head_angle), np.sin(head_angle)
        x = neck[:, 0] + scale * (u * hc - v * hs)
        y = neck[:, 1] + scale * (u * hs + v * hc)
        return np.stack([x, y, np.full_like(x, z * scale)], axis=1)

    points = {
        "nose": head(b.head_u + b.head_a, 0.0, b.head_z),
        "earL": head(b.ear_u, -b.ear_v, b.ear_z),
        "earR": head(b.ear_u, b.ear_v, b.ear_z),
        "head": head(b.head_u, 0.0, b.head_z),
        "body": body(0.0, 0.0, b.body_z),
    }
    phase = motion.phase[grid]
    for name, offset in PAW_PHASE.items():
        front, side = name[3] == "F", (-1.0 if name[4] == "L" else 1.0)
        swing = phase + offset
        base_u = b.front_u if front else b.hind_u
        points[name] = body(
            base_u + b.stride * np.sin(swing),
            side * (b.front_v if front else b.hind_v),
            b.paw_r + b.lift * np.maximum(0.0, np.cos(swing)),
        )
        points["limb" + name[3:]] = body(base_u, side * b.leg_v, b.leg_z)
    # Tail: two segments, each bent relative to the one before.
    base = body(b.tail_u, 0.0, b.tail_z[0])
    bend = motion.tail_bend[grid]
    raise_ = motion.tail_raise[grid]
    points["tailBase"] = base
    joints = [base]
    angle = theta + math.pi
    for k in range(2):
        angle = angle + bend[:, k]
        prev = joints[-1]
        z = (b.tail_z[k + 1] + (k + 1) / 2 * b.tail_raise * raise_) * scale
        joints.append(
            np.stack(
                [
                    prev[:, 0] + b.tail_len * scale * np.cos(angle),
                    prev[:, 1] + b.tail_len * scale * np.sin(angle),
                    z,
                ],
                axis=1,
            )
        )
    points["tailMid"], points["tailTip"] = joints[1], joints[2]
    return Pose(points=points, heading=theta, head_angle=head_angle)


# ------------------------------------------------------------------------------------------------
# Scenes: one video's motion, backgrounds, occluders and lighting


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one video and to state its truth."""

    spec: SyntheticSpec
    key: tuple[int, ...]  # seeds this video's random streams
    motion: Motion
    backgrounds: tuple[np.ndarray, ...]  # per view, (H, W) float32
    occluders: np.ndarray  # (n_views, n_grid) bar centre x, NaN without occluder
    gain: np.ndarray  # (n_frames,) lighting

    @property
    def scale(self) -> float:
        return min(self.spec.frame_size) / 128.0

    @property
    def n_views(self) -> int:
        return 2 if self.spec.two_view else 1

    @property
    def floor_row(self) -> float:
        """Side view: the row of z = 0."""
        return self.spec.frame_size[0] * FLOOR


def keypoint_names(two_view: bool) -> list[str]:
    """Keypoint names in table order: ``<part>_top`` then ``<part>_bot`` in two-view layouts."""
    if not two_view:
        return list(PARTS)
    return [f"{p}_top" for p in PARTS] + [f"{p}_bot" for p in PARTS]


def view_groups(two_view: bool) -> list[list[str]]:
    """The same body part in every view (for multi-view PCA); empty for one view."""
    return [[f"{p}_top", f"{p}_bot"] for p in PARTS] if two_view else []


def _background(rng: np.random.Generator, spec: SyntheticSpec, side: bool) -> np.ndarray:
    """Static textured floor (top) or wall and ground (side), with paw-like specks."""
    height, width = spec.frame_size
    scale = min(height, width) / 128.0
    image = render.texture(rng, height, width) * SHADES.floor_texture
    if side:
        floor = height * FLOOR
        rows = np.arange(height, dtype=np.float32)[:, None]
        level = SHADES.wall + (SHADES.ground - SHADES.wall) * np.clip(rows - floor + 0.5, 0, 1)
        image = image * 0.7 + level
        specks_y = np.full(2, floor - BODY.paw_r * scale)  # debris lying on the ground
    else:
        image = image + SHADES.floor
        specks_y = rng.uniform(4, height - 5, 3)
    canvas = image[None].astype(np.float32)
    for y in specks_y:
        x = rng.uniform(4, width - 5)
        r = BODY.paw_r * scale * rng.uniform(0.8, 1.2)
        center = np.array([[x, y]])
        render.stamp(canvas, center, r + 2, render.disk(x, y, r), SHADES.distractor)
    return canvas[0]


def _occluder_track(rng: np.random.Generator, n_grid: int, width: int, scale: float) -> np.ndarray:
    """A bar sweeping back and forth across the view, leaving it for a while at each end."""
    period = rng.uniform(120.0, 240.0) * SUBSTEPS
    amplitude = width * 0.5 + 12.0 * scale
    start = rng.uniform(0, 2 * math.pi)
    return (width - 1) / 2 + amplitude * np.sin(2 * math.pi * np.arange(n_grid) / period + start)


def make_scene(spec: SyntheticSpec, split: str, index: int) -> Scene:
    """The scene of video ``index`` of ``split`` ("train" or "test"); cheap, renders nothing.

    Each video seeds its own streams from (seed, split, index), so adding videos never changes
    the others.
    """
    key = (spec.seed, {"train": 0, "test": 1}[split], index)
    height, width = spec.frame_size
    scale = min(height, width) / 128.0
    motion = simulate_motion(np.random.default_rng([*key, 0]), spec.frames_per_video, height, width)
    rng = np.random.default_rng([*key, 1])
    n_views = 2 if spec.two_view else 1
    backgrounds = tuple(_background(rng, spec, side=v == 1) for v in range(n_views))
    n_grid = len(motion.x)
    occluders = np.full((n_views, n_grid), np.nan)
    if spec.occlusion:
        occluders = np.stack([_occluder_track(rng, n_grid, width, scale) for _ in range(n_views)])
    frames = np.arange(spec.frames_per_video)
    gain = 1.0 + 0.06 * np.sin(2 * math.pi * frames / rng.uniform(90, 200) + rng.uniform(0, 7))
    return Scene(spec, key, motion, backgrounds, occluders, gain.astype(np.float32))


def occluder_half_width(scale: float) -> float:
    """Half the occluding bar's width: wide enough to hide a whole paw or the nose."""
    return 6.0 * scale


def scene_truth(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """True keypoints (T, K, 2) in whole-frame pixels and visibility (T, K) of every frame.

    A keypoint is visible when it lies inside its view and the occluder does not cover it.
    Coordinates are rounded to 1e-4 px, so the tables print short and read back exactly.
    """
    height, width = scene.spec.frame_size
    grid = frame_to_grid(np.arange(scene.spec.frames_per_video))
    pose = pose_at(scene.motion, grid, scene.scale)
    views = []
    for v in range(scene.n_views):
        pts = np.stack([pose.points[p] for p in PARTS], axis=1)  # (T, P, 3)
        local_y = pts[..., 1] if v == 0 else scene.floor_row - pts[..., 2]
        xy = np.stack([pts[..., 0], local_y], axis=-1)
        inside = (
            (xy[..., 0] > -0.5)
            & (xy[..., 0] < width - 0.5)
            & (xy[..., 1] > -0.5)
            & (xy[..., 1] < height - 0.5)
        )
        bar = scene.occluders[v, grid][:, None]
        covered = np.abs(xy[..., 0] - bar) < occluder_half_width(scene.scale)  # NaN -> False
        xy[..., 1] += v * height
        views.append((xy, inside & ~covered))
    keypoints = np.concatenate([xy for xy, _ in views], axis=1)
    visible = np.concatenate([vis for _, vis in views], axis=1)
    return np.round(keypoints, 4), visible


# ------------------------------------------------------------------------------------------------
# Rendering


def _draw_top(canvas: np.ndarray, pose: Pose, scale: float) -> None:
    """The animal seen from above."""
    b, s, pts = BODY, scale, pose.points
    _draw_tail(canvas, pts, scale, lambda p: p[:, :2])
    body = pts["body"]
    cos, sin = render.col(np.cos(pose.heading)), render.col(np.sin(pose.heading))
    bx, by = render.col(body[:, 0]), render.col(body[:, 1])

    def body_shade(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = ((x - bx) * cos + (y - by) * sin) / (b.body_a * s)
        return SHADES.body + SHADES.body_gradient * np.clip(u, -1, 1)

    field = render.ellipse(body[:, 0], body[:, 1], b.body_a * s, b.body_b * s, pose.heading)
    render.stamp(canvas, body[:, :2], (b.body_a + 2) * s, field, body_shade)
    head = pts["head"]
    field = render.ellipse(head[:, 0], head[:, 1], b.head_a * s, b.head_b * s, pose.head_angle)
    render.stamp(canvas, head[:, :2], (b.head_a + 2) * s, field, SHADES.head)
    _draw_head_marks(canvas, pts, scale, lambda p: p[:, :2])
    for name in ("pawHL", "pawHR", "pawFL", "pawFR"):
        paw = pts[name]
        field = render.disk(paw[:, 0], paw[:, 1], b.paw_r * s)
        render.stamp(canvas, paw[:, :2], (b.paw_r + 2) * s, field, SHADES.paw)


def _draw_side(canvas: np.ndarray, pose: Pose, scale: float, floor_row: float) -> None:
    """The animal seen from the side: an orthographic projection onto (x, z)."""
    b, s, pts = BODY, scale, pose.points

    def xz(p: np.ndarray) -> np.ndarray:
        return np.stack([p[:, 0], floor_row - p[:, 2]], axis=1)

    _draw_tail(canvas, pts, scale, xz)
    for name in ("pawHL", "pawHR", "pawFL", "pawFR"):
        top, paw = xz(pts["limb" + name[3:]]), xz(pts[name])
        field = render.capsule(*top.T, *paw.T, b.leg_r * s, b.leg_r * s)
        reach = (b.stride + b.lift + b.leg_z + 3) * s
        render.stamp(canvas, (top + paw) / 2, reach, field, SHADES.leg)
    # An ellipsoid rotated about z projects onto (x, z) as an axis-aligned ellipse.
    for part, a, bb, c, angle, shade in (
        ("body", b.body_a, b.body_b, b.body_c, pose.heading, SHADES.body),
        ("head", b.head_a, b.head_b, b.head_c, pose.head_angle, SHADES.head),
    ):
        centre = xz(pts[part])
        half = s * np.sqrt((a * np.cos(angle)) ** 2 + (bb * np.sin(angle)) ** 2)
        field = render.ellipse(centre[:, 0], centre[:, 1], half, c * s, 0.0)
        render.stamp(canvas, centre, (a + 2) * s, field, shade)
    _draw_head_marks(canvas, pts, scale, xz)
    for name in ("pawHL", "pawHR", "pawFL", "pawFR"):
        paw = xz(pts[name])
        field = render.disk(paw[:, 0], paw[:, 1], b.paw_r * s)
        render.stamp(canvas, paw, (b.paw_r + 2) * s, field, SHADES.paw)


def _draw_tail(
    canvas: np.ndarray, pts: dict[str, np.ndarray], scale: float, project: Project
) -> None:
    """Two tapering capsules, tailBase to tailMid to tailTip, fading towards the tip."""
    b = BODY
    chain = [project(pts[p]) for p in ("tailBase", "tailMid", "tailTip")]
    for k in (1, 0):  # tip segment first, so the thicker one overlaps it
        p0, p1 = chain[k], chain[k + 1]
        field = render.capsule(*p0.T, *p1.T, b.tail_r[k] * scale, b.tail_r[k + 1] * scale)
        reach = (b.tail_len / 2 + b.tail_r[0] + 2) * scale
        render.stamp(canvas, (p0 + p1) / 2, reach, field, SHADES.tail[k])


def _draw_head_marks(
    canvas: np.ndarray, pts: dict[str, np.ndarray], scale: float, project: Project
) -> None:
    """Darker ears and nose tip: low-contrast marks on the head, where the keypoints are."""
    b = BODY
    for name, r, shade in (
        ("earL", b.ear_r, SHADES.ear),
        ("earR", b.ear_r, SHADES.ear),
        ("nose", b.nose_r, SHADES.nose),
    ):
        p = project(pts[name])
        render.stamp(canvas, p, (r + 2) * scale, render.disk(p[:, 0], p[:, 1], r * scale), shade)


def render_frames(scene: Scene, start: int, stop: int) -> np.ndarray:
    """Frames ``start..stop-1`` of the scene as uint8 (n, H * n_views, W).

    Any range gives the same pixels for the same frame: each frame's noise is seeded by its number.
    """
    spec, scale = scene.spec, scene.scale
    frames = np.arange(start, stop)
    offsets = BLUR_STEPS if spec.motion_blur else (0,)
    grid = (frame_to_grid(frames)[:, None] + np.array(offsets)[None, :]).ravel()
    pose = pose_at(scene.motion, grid, scale)
    views = []
    for v in range(scene.n_views):
        canvas = np.repeat(scene.backgrounds[v][None], len(grid), axis=0)
        if v == 0:
            _draw_top(canvas, pose, scale)
        else:
            _draw_side(canvas, pose, scale, scene.floor_row)
        bar = scene.occluders[v, grid]
        if not np.isnan(bar).any():
            render.vertical_bar(canvas, bar, occluder_half_width(scale), SHADES.occluder)
        views.append(canvas.reshape(len(frames), len(offsets), *canvas.shape[1:]).mean(axis=1))
    image = np.concatenate(views, axis=1) * scene.gain[frames][:, None, None]
    if spec.noise_std > 0:
        for i, t in enumerate(frames):
            rng = np.random.default_rng([*scene.key, 2, int(t)])
            image[i] += spec.noise_std * rng.standard_normal(image.shape[1:], dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_video(
    spec: SyntheticSpec, split: str = "train", index: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All frames (T, H, W) uint8, true keypoints (T, K, 2) and visibility (T, K) of one video."""
    scene = make_scene(spec, split, index)
    keypoints, visible = scene_truth(scene)
    frames = np.concatenate(
        [render_frames(scene, s, min(s + CHUNK, spec.frames_per_video)) for s in _chunks(spec)]
    )
    return frames, keypoints, visible


def _chunks(spec: SyntheticSpec) -> range:
    return range(0, spec.frames_per_video, CHUNK)


# ------------------------------------------------------------------------------------------------
# Writing a project


def _labeled_frames(spec: SyntheticSpec) -> list[list[int]]:
    """Sorted labeled frame numbers per training video; every one has its t-2..t+2 context."""
    rng = np.random.default_rng([spec.seed, 3])
    pad = max(CONTEXT)
    counts = [
        spec.n_labeled // spec.n_train_videos + (i < spec.n_labeled % spec.n_train_videos)
        for i in range(spec.n_train_videos)
    ]
    candidates = np.arange(pad, spec.frames_per_video - pad)
    return [sorted(int(t) for t in rng.choice(candidates, n, replace=False)) for n in counts]


def _x264_cpu_cap() -> str | None:
    """The x264 ``asm`` level to use instead of auto-detection, or None to keep it.

    x264's AVX-512 code reads uninitialised memory (seen with PyAV 18 on AMD Zen 4): identical
    frames then encode to slightly different videos from run to run. Every AVX-512 CPU has AVX2,
    and capping x264 there keeps the output repeatable at the same speed.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "AVX2" if "avx512" in cpuinfo else None


def _open_encoder(path: Path, spec: SyntheticSpec, height: int, width: int):
    """An open PyAV container and stream, set for a constant frame rate and high quality.

    ``bitexact`` keeps random ids and version strings out of the container, so the same frames
    give the same file bytes.
    """
    encoder, _, pix_fmt, options = CODECS[spec.codec]
    options = dict(options)
    if spec.codec == "h264" and (cap := _x264_cpu_cap()):
        options["x264-params"] = f"asm={cap}"
    container = av.open(str(path), "w", options={"fflags": "+bitexact"})
    stream = container.add_stream(encoder, rate=spec.fps, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.time_base = Fraction(1, spec.fps)
    if spec.codec == "h264":
        stream.codec_context.gop_size = spec.fps  # a keyframe a second keeps seeking cheap
    if spec.codec == "mjpeg":
        stream.codec_context.qscale = 2  # quality scale 2 of 31: near lossless
    return container, stream


def _encode(container, stream, frames: np.ndarray, first: int, fps: int) -> None:
    """Encode grey frames with timestamps ``first, first + 1, ...`` in units of 1 / fps.

    Each frame is converted to the stream's pixel format here, into a frame of its own, so the
    encoder never depends on how PyAV converts and buffers frames internally.
    """
    pix_fmt = stream.codec_context.pix_fmt
    for i, image in enumerate(frames):
        grey = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
        frame = grey.reformat(format=pix_fmt)
        frame.pts, frame.time_base = first + i, Fraction(1, fps)
        container.mux(stream.encode(frame))


def _write_video(scene: Scene, path: Path, png_dir: Path | None, png_frames: set[int]) -> None:
    """Render and encode one video chunk by chunk, saving the frames in ``png_frames`` as PNG."""
    spec = scene.spec
    height = spec.frame_size[0] * scene.n_views
    container, stream = _open_encoder(path, spec, height, spec.frame_size[1])
    with contextlib.closing(container):
        for start in _chunks(spec):
            frames = render_frames(scene, start, min(start + CHUNK, spec.frames_per_video))
            _encode(container, stream, frames, start, spec.fps)
            for t in sorted(png_frames & set(range(start, start + len(frames)))):
                png_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frames[t - start], mode="L").save(png_dir / f"img{t:08d}.png")
        container.mux(stream.encode(None))


def _write_project(root: Path, spec: SyntheticSpec) -> None:
    """Generate every file of a project into ``root`` (a fresh directory); project.yaml last."""
    names = keypoint_names(spec.two_view)
    suffix = CODECS[spec.codec][1]
    labeled = _labeled_frames(spec)
    label_index, label_rows, videos = [], [], {"train": [], "test": []}
    truth = {}
    for split, count, folder in (
        ("train", spec.n_train_videos, "videos"),
        ("test", spec.n_test_videos, "videos-test"),
    ):
        for i in range(count):
            stem = f"{split}{i:02d}"
            scene = make_scene(spec, split, i)
            keypoints, visible = scene_truth(scene)
            table = arrays_to_table(
                keypoints, names, scorer="truth", extra={"visible": visible.astype(float)}
            )
            write_pose_csv(table, root / "truth" / f"{stem}.csv")
            truth[stem] = f"truth/{stem}.csv"
            wanted: set[int] = set()
            if split == "train":
                for t in labeled[i]:
                    wanted |= {t, *(t + d for d in CONTEXT)}
                    label_index.append(f"labeled-data/{stem}/img{t:08d}.png")
                    label_rows.append(np.where(visible[t, :, None], keypoints[t], np.nan))
            (root / folder).mkdir(parents=True, exist_ok=True)
            _write_video(
                scene, root / folder / f"{stem}{suffix}", root / "labeled-data" / stem, wanted
            )
            videos[split].append(f"{folder}/{stem}{suffix}")
    rows = np.stack(label_rows) if label_rows else np.empty((0, len(names), 2))
    write_pose_csv(
        arrays_to_table(rows, names, index=label_index, scorer="synthetic"),
        root / "CollectedData.csv",
    )
    height, width = spec.frame_size
    meta = {
        "format": "lpray-synthetic",
        "generator_version": GENERATOR_VERSION,
        "spec_hash": spec.hash(),
        "spec": spec.to_dict(),
        "keypoint_names": names,
        "view_groups": view_groups(spec.two_view),
        "fps": spec.fps,
        "frame_size": [height * (2 if spec.two_view else 1), width],
        "view_size": [height, width],
        "csv": "CollectedData.csv",
        "train_videos": videos["train"],
        "test_videos": videos["test"],
        "truth": truth,
        "labeled_frames": {f"train{i:02d}": frames for i, frames in enumerate(labeled)},
        "context_offsets": [-2, -1, 0, 1, 2],
        "coordinates": "pixel centres: column j is x = j, row i is y = i",
    }
    (root / "project.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _complete(root: Path, spec_hash: str) -> bool:
    """True when ``root`` holds a whole project made from a spec with this hash."""
    try:
        project = load_synthetic_project(root)
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return False
    paths = [project.csv_path, *project.train_videos, *project.test_videos]
    paths += list(project.truth_paths.values())
    return project.spec.hash() == spec_hash and all(p.is_file() for p in paths)


def make_synthetic_project(
    root: str | os.PathLike, spec: SyntheticSpec | None = None, overwrite: bool = False
) -> SyntheticProject:
    """Generate a project at ``root``, or return the one already there from the same spec.

    The project is built in a hidden sibling directory and renamed into place, so a killed run
    never leaves a partial project that looks complete, and concurrent callers (several Ray
    workers on one node) agree on one result.

    Args:
        root: the project directory; must be absent, empty, or a project from the same spec.
        spec: what to generate; the default spec when None.
        overwrite: replace a project made from a different spec instead of refusing.
    """
    root, spec = Path(root), spec or SyntheticSpec()
    if _complete(root, spec.hash()):
        return load_synthetic_project(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ValueError(
            f"{root} is not empty and holds no project made from this spec (hash {spec.hash()}); "
            "choose another directory or replace it (overwrite=True; lpray synthetic --overwrite)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_project(tmp, spec)
        _swap_into_place(tmp, root, spec.hash())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_synthetic_project(root)


def _swap_into_place(tmp: Path, root: Path, spec_hash: str) -> None:
    """Rename the finished ``tmp`` to ``root``; a concurrent finisher of the same spec wins."""
    if root.exists() and any(root.iterdir()):
        if _complete(root, spec_hash):
            return  # someone else finished first
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(root, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, root)  # replaces an empty directory atomically
    except OSError:
        if not _complete(root, spec_hash):
            raise


def load_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """True keypoints (T, K, 2) in frame pixels and visibility (T, K) bool from a truth CSV."""
    table = read_pose_csv(path)
    coords = table.columns.get_level_values(2)
    parts = list(dict.fromkeys(table.columns.get_level_values(1)))
    values = {
        coord: table.loc[:, coords == coord].to_numpy(dtype=float)
        for coord in ("x", "y", "visible")
    }
    if values["visible"].shape[1] != len(parts):
        raise ValueError(f"{path}: a truth table needs x, y and visible for every keypoint")
    return np.stack([values["x"], values["y"]], axis=-1), values["visible"] > 0.5


# ------------------------------------------------------------------------------------------------
# Looking at it


def read_frames(path: str | os.PathLike, frames: list[int]) -> dict[int, np.ndarray]:
    """Decode the given frame numbers of a video as greyscale uint8 (sequential decode)."""
    wanted, out = set(frames), {}
    with av.open(str(path)) as container:
        for t, frame in enumerate(container.decode(video=0)):
            if t in wanted:
                out[t] = frame.to_ndarray(format="gray")
            if len(out) == len(wanted):
                break
    return out


def save_preview(project: SyntheticProject, path: str | os.PathLike, n_frames: int = 4) -> Path:
    """A PNG of a few frames of the first training video with the true keypoints drawn.

    Visible keypoints are filled dots, hidden ones hollow circles, one colour per body part.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    video = project.train_videos[0]
    keypoints, visible = load_truth(project.truth_paths[video.stem])
    picks = np.linspace(0, len(keypoints) - 1, n_frames + 2).astype(int)[1:-1].tolist()
    frames = read_frames(video, picks)
    height, width = project.frame_size
    fig, axes = plt.subplots(1, n_frames, figsize=(3 * n_frames, 3 * height / width + 0.7))
    colours = plt.get_cmap("tab10")(np.arange(len(PARTS)) % 10)
    for ax, t in zip(np.atleast_1d(axes), picks):
        ax.imshow(frames[t], cmap="gray", vmin=0, vmax=255)
        for k in range(keypoints.shape[1]):
            colour = colours[k % len(PARTS)]
            x, y = keypoints[t, k]
            face = colour if visible[t, k] else "none"
            ax.scatter([x], [y], s=14, facecolors=[face], edgecolors=[colour], linewidths=0.8)
        ax.set_title(f"{video.stem} frame {t}", fontsize=8)
        ax.set_axis_off()
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=colours[k], label=part)
        for k, part in enumerate(PARTS)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(PARTS), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
