"""Compiled CPU flow pipeline (numba): pyramid, data terms, raster SOR, warp; parallel over the batch.

On the CPU each image of a batch is an independent sequential problem, so the reference's raster
(lexicographic) Gauss-Seidel order costs nothing in parallelism when the batch is spread over the
cores. These kernels reproduce the C++ arithmetic pixel by pixel in the same operation order (the
per-pixel denominators are only hoisted out of the sweeps, which leaves every rounding unchanged).
Two or four images are swept in one loop where the batch allows: their dependency chains are independent,
so the CPU overlaps them (less time per pixel-sweep, bit-identical results; docs/flow.md has the
measurement).
numba is optional; without it the torch red-black solver is used.
"""
from __future__ import annotations

import threading

import numpy as np

try:  # numba is an optional accelerator for the CPU path
    import numba
    from numba import njit, prange
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

from .constants import EPS2, OMEGA, PROX
from .memory import FlowPlan
from .ops import D5, G5, gauss_taps
from .pyramid import effective_ratio, pyramid_plan

if HAVE_NUMBA:
    @njit(cache=True, nogil=True)
    def _diag(a11, a22, phi, alpha, k1, k2):
        """k = omega / (A + 0.05 alpha + alpha * sum of existing neighbour weights), per image."""
        g, h, w = a11.shape
        prox = alpha * PROX
        for n in range(g):
            for i in range(h):
                for j in range(w):
                    c = 0.0
                    if j > 0:
                        c += phi[n, i, j - 1]
                    if j < w - 1:
                        c += phi[n, i, j]
                    if i > 0:
                        c += phi[n, i - 1, j]
                    if i < h - 1:
                        c += phi[n, i, j]
                    c *= alpha
                    k1[n, i, j] = OMEGA / (a11[n, i, j] + prox + c)
                    k2[n, i, j] = OMEGA / (a22[n, i, j] + prox + c)

    # One image group of literal size G (1, 2 or 4) per compiled kernel: G is a closure constant, so
    # LLVM sees a literal trip count and interleaves the independent dependency chains (a run-time
    # group size or a called per-pixel helper measured several times slower).
    def _make_sweeps(G: int):
        @njit(cache=True, nogil=True)
        def sweeps(a12, b1, b2, phi, k1, k2, alpha, n_sor, du, dv):
            _, h, w = a12.shape
            for _ in range(n_sor):
                for i in range(h):
                    for j in range(w):
                        for n in range(G):
                            s1 = 0.0
                            s2 = 0.0
                            if j > 0:
                                wt = phi[n, i, j - 1]
                                s1 += wt * du[n, i, j - 1]
                                s2 += wt * dv[n, i, j - 1]
                            if j < w - 1:
                                wt = phi[n, i, j]
                                s1 += wt * du[n, i, j + 1]
                                s2 += wt * dv[n, i, j + 1]
                            if i > 0:
                                wt = phi[n, i - 1, j]
                                s1 += wt * du[n, i - 1, j]
                                s2 += wt * dv[n, i - 1, j]
                            if i < h - 1:
                                wt = phi[n, i, j]
                                s1 += wt * du[n, i + 1, j]
                                s2 += wt * dv[n, i + 1, j]
                            s1 *= -alpha
                            s2 *= -alpha
                            s1 += a12[n, i, j] * dv[n, i, j]
                            du[n, i, j] = (1 - OMEGA) * du[n, i, j] + k1[n, i, j] * (b1[n, i, j] - s1)
                            s2 += a12[n, i, j] * du[n, i, j]
                            dv[n, i, j] = (1 - OMEGA) * dv[n, i, j] + k2[n, i, j] * (b2[n, i, j] - s2)
        return sweeps

    _sweeps1 = _make_sweeps(1)
    _sweeps2 = _make_sweeps(2)
    _sweeps4 = _make_sweeps(4)

    # ---- 1-D correlations with replicate borders; clamp-free interiors so LLVM vectorises -----
    # Accumulation order is the C++ one (acc = 0, then taps left to right), so results are
    # bit-identical to the clamped loops.

    @njit(cache=True, nogil=True)
    def _corr_x(src, taps, dst):
        h, w = src.shape
        r = taps.shape[0] // 2
        lo = min(r, w)
        hi = max(w - r, lo)
        for i in range(h):
            # Tap-outer loop: each element still sums its taps left to right from 0.
            # Views indexed from 0 let LLVM drop numba's negative-index checks and vectorise.
            n_in = hi - lo
            drow = dst[i, lo:hi]
            for j in range(n_in):
                drow[j] = 0.0
            for l in range(2 * r + 1):
                t = taps[l]
                srow = src[i, lo + l - r:lo + l - r + n_in]
                for j in range(n_in):
                    drow[j] += t * srow[j]
            for j in range(lo):
                acc = 0.0
                for l in range(2 * r + 1):
                    acc += taps[l] * src[i, min(max(j + l - r, 0), w - 1)]
                dst[i, j] = acc
            for j in range(hi, w):
                acc = 0.0
                for l in range(2 * r + 1):
                    acc += taps[l] * src[i, min(max(j + l - r, 0), w - 1)]
                dst[i, j] = acc

    @njit(cache=True, nogil=True)
    def _corr_y(src, taps, dst):
        h, w = src.shape
        r = taps.shape[0] // 2
        for i in range(h):
            inner = r <= i < h - r
            for j in range(w):
                dst[i, j] = 0.0
            for l in range(2 * r + 1):
                ii = i + l - r if inner else min(max(i + l - r, 0), h - 1)
                t = taps[l]
                for j in range(w):
                    dst[i, j] += t * src[ii, j]


    # ---- whole-level solver: everything of SmoothFlowSOR in compiled loops --------------------

    @njit(cache=True, nogil=True)
    def _filt5_xy(src, taps, tmp, dst):
        """Separable 5-tap correlation (x then y pass), replicate borders, on (C, H, W)."""
        for c in range(src.shape[0]):
            _corr_x(src[c], taps, tmp[c])
            _corr_y(tmp[c], taps, dst[c])


    @njit(cache=True, nogil=True)
    def _warp1(f1, f2, u, v, out, oy):
        """Bilinear f2 at (x+u, y+v); outside the frame f1 (all channels).

        f1, u, v, out may be a strip of rows starting at row `oy` of the frame; f2 is the whole frame.
        """
        c_n, h, w = f1.shape
        hf = f2.shape[1]
        for i in range(h):
            for j in range(w):
                x = j + u[i, j]
                y = (oy + i) + v[i, j]
                if x < 0.0 or x > w - 1 or y < 0.0 or y > hf - 1:
                    for c in range(c_n):
                        out[c, i, j] = f1[c, i, j]
                    continue
                x0 = int(np.floor(x))
                y0 = int(np.floor(y))
                dx = x - x0
                dy = y - y0
                x1 = min(x0 + 1, w - 1)
                y1 = min(y0 + 1, hf - 1)
                for c in range(c_n):
                    out[c, i, j] = ((f2[c, y0, x0] * (1 - dx) + f2[c, y0, x1] * dx) * (1 - dy)
                                    + (f2[c, y1, x0] * (1 - dx) + f2[c, y1, x1] * dx) * dy)

    @njit(cache=True, nogil=True)
    def _phi1(uu, vv, phi):
        h, w = uu.shape
        for i in range(h):
            for j in range(w):
                ux = uu[i, j + 1] - uu[i, j] if j < w - 1 else 0.0
                vx = vv[i, j + 1] - vv[i, j] if j < w - 1 else 0.0
                uy = uu[i + 1, j] - uu[i, j] if i < h - 1 else 0.0
                vy = vv[i + 1, j] - vv[i, j] if i < h - 1 else 0.0
                phi[i, j] = 0.5 / np.sqrt(ux * ux + uy * uy + vx * vx + vy * vy + EPS2)

    @njit(cache=True, nogil=True)
    def _lap1(x, phi, out):
        """sum_q w_pq (x_p - x_q) with the edge weights of the SOR."""
        h, w = x.shape
        for i in range(h):
            for j in range(w):
                acc = 0.0
                if j > 0:
                    acc += phi[i, j - 1] * (x[i, j] - x[i, j - 1])
                if j < w - 1:
                    acc += phi[i, j] * (x[i, j] - x[i, j + 1])
                if i > 0:
                    acc += phi[i - 1, j] * (x[i, j] - x[i - 1, j])
                if i < h - 1:
                    acc += phi[i, j] * (x[i, j] - x[i + 1, j])
                out[i, j] = acc

    @njit(cache=True, nogil=True)
    def _level_group(f1, f2, w2, u, v, alpha, n_outer, n_inner, n_sor, g5, d5, oy):
        """SmoothFlowSOR for a group of 1, 2 or 4 images: f1, w2 (G, C, H, W); u, v (G, H, W)
        updated in place. They may be a strip of rows from row `oy` on; f2 is the whole frame."""
        g, c_n, h, w = f1.shape
        i1 = np.empty_like(f1)
        i2 = np.empty_like(f1)
        tmp = np.empty((c_n, h, w))
        ix = np.empty_like(f1)
        iy = np.empty_like(f1)
        it = np.empty_like(f1)
        a11 = np.empty((g, h, w))
        a12 = np.empty_like(a11)
        a22 = np.empty_like(a11)
        b1 = np.empty_like(a11)
        b2 = np.empty_like(a11)
        r1 = np.empty_like(a11)
        r2 = np.empty_like(a11)
        phi = np.empty_like(a11)
        k1 = np.empty_like(a11)
        k2 = np.empty_like(a11)
        du = np.empty_like(a11)
        dv = np.empty_like(a11)
        uu = np.empty((h, w))
        vv = np.empty((h, w))
        lap = np.empty((h, w))
        inv_c = 1.0 / c_n
        for n in range(g):
            _filt5_xy(f1[n], g5, tmp, i1[n])
        for _ in range(n_outer):
            for n in range(g):
                _filt5_xy(w2[n], g5, tmp, i2[n])
                for c in range(c_n):
                    for i in range(h):
                        for j in range(w):
                            tmp[c, i, j] = 0.4 * i1[n, c, i, j] + 0.6 * i2[n, c, i, j]
                            it[n, c, i, j] = i2[n, c, i, j] - i1[n, c, i, j]
                    _corr_x(tmp[c], d5, ix[n, c])
                    _corr_y(tmp[c], d5, iy[n, c])
            du[:] = 0.0
            dv[:] = 0.0
            for hh in range(n_inner):
                for n in range(g):
                    for i in range(h):
                        for j in range(w):
                            uu[i, j] = u[n, i, j] + du[n, i, j] if hh > 0 else u[n, i, j]
                            vv[i, j] = v[n, i, j] + dv[n, i, j] if hh > 0 else v[n, i, j]
                    _phi1(uu, vv, phi[n])
                    # Channel-outer loops (contiguous, vectorisable sqrt/div); each sum still
                    # accumulates the channels in order from 0.
                    a11n, a12n, a22n, b1n, b2n = a11[n], a12[n], a22[n], b1[n], b2[n]
                    dun, dvn = du[n], dv[n]
                    for i in range(h):
                        for j in range(w):
                            a11n[i, j] = 0.0
                            a12n[i, j] = 0.0
                            a22n[i, j] = 0.0
                            b1n[i, j] = 0.0
                            b2n[i, j] = 0.0
                    for c in range(c_n):
                        ixc, iyc, itc = ix[n, c], iy[n, c], it[n, c]
                        for i in range(h):
                            for j in range(w):
                                x_ = ixc[i, j]
                                y_ = iyc[i, j]
                                t_ = itc[i, j]
                                r = t_ + x_ * dun[i, j] + y_ * dvn[i, j] if hh > 0 else t_
                                psi = 0.5 / np.sqrt(r * r + EPS2)
                                a11n[i, j] += psi * x_ * x_
                                a12n[i, j] += psi * x_ * y_
                                a22n[i, j] += psi * y_ * y_
                                b1n[i, j] += psi * x_ * t_
                                b2n[i, j] += psi * y_ * t_
                    for i in range(h):
                        for j in range(w):
                            a11n[i, j] *= inv_c
                            a12n[i, j] *= inv_c
                            a22n[i, j] *= inv_c
                            b1n[i, j] *= inv_c
                            b2n[i, j] *= inv_c
                    _lap1(u[n], phi[n], lap)
                    for i in range(h):
                        for j in range(w):
                            r1[n, i, j] = -b1[n, i, j] - alpha * lap[i, j]
                    _lap1(v[n], phi[n], lap)
                    for i in range(h):
                        for j in range(w):
                            r2[n, i, j] = -b2[n, i, j] - alpha * lap[i, j]
                _diag(a11, a22, phi, alpha, k1, k2)
                if g == 4:
                    _sweeps4(a12, r1, r2, phi, k1, k2, alpha, n_sor, du, dv)
                elif g == 2:
                    _sweeps2(a12, r1, r2, phi, k1, k2, alpha, n_sor, du, dv)
                else:
                    _sweeps1(a12, r1, r2, phi, k1, k2, alpha, n_sor, du, dv)
            for n in range(g):
                for i in range(h):
                    for j in range(w):
                        u[n, i, j] += du[n, i, j]
                        v[n, i, j] += dv[n, i, j]
                _warp1(f1[n], f2[n], u[n], v[n], w2[n], oy)


    # ---- pyramid and features ------------------------------------------------------------------

    @njit(cache=True, nogil=True)
    def _blur(src, taps, dst):
        """Separable correlation with odd-length taps (x then y), replicate borders, (G, C, H, W)."""
        g, c_n, h, w = src.shape
        tmp = np.empty((h, w))
        for n in range(g):
            for c in range(c_n):
                _corr_x(src[n, c], taps, tmp)
                _corr_y(tmp, taps, dst[n, c])


    @njit(cache=True, nogil=True)
    def _resize(src, x0, x1, dx, y0, y1, dy, dst):
        """Separable clamped bilinear resampling at precomputed taps (x then y), (G, C, H, W)."""
        g, c_n, h, w = src.shape
        hd = y0.shape[0]
        wd = x0.shape[0]
        tmp = np.empty((h, wd))
        for n in range(g):
            for c in range(c_n):
                for i in range(h):
                    for j in range(wd):
                        tmp[i, j] = src[n, c, i, x0[j]] * (1.0 - dx[j]) + src[n, c, i, x1[j]] * dx[j]
                for i in range(hd):
                    for j in range(wd):
                        dst[n, c, i, j] = tmp[y0[i], j] * (1.0 - dy[i]) + tmp[y1[i], j] * dy[i]

    @njit(cache=True, nogil=True)
    def _features_rgb(img, d5, out):
        """[gray, D5x gray, D5y gray, G-R, G-B] from (G, 3, H, W) RGB into (G, 5, H, W)."""
        g, _, h, w = img.shape
        for n in range(g):
            for i in range(h):
                for j in range(w):
                    r_ = img[n, 0, i, j]
                    g_ = img[n, 1, i, j]
                    b_ = img[n, 2, i, j]
                    out[n, 0, i, j] = 0.299 * r_ + 0.587 * g_ + 0.114 * b_
                    out[n, 3, i, j] = g_ - r_
                    out[n, 4, i, j] = g_ - b_
            _corr_x(out[n, 0], d5, out[n, 1])
            _corr_y(out[n, 0], d5, out[n, 2])

    @njit(cache=True, nogil=True)
    def _features_plain(img, d5, out):
        """[I, D5x I, D5y I] per channel (colType 1 / non-RGB), (G, C, H, W) -> (G, 3C, H, W)."""
        g, c_n, h, w = img.shape
        for n in range(g):
            for c in range(c_n):
                for i in range(h):
                    for j in range(w):
                        out[n, c, i, j] = img[n, c, i, j]
                        ax = 0.0
                        ay = 0.0
                        for l in range(5):
                            ax += d5[l] * img[n, c, i, min(max(j + l - 2, 0), w - 1)]
                            ay += d5[l] * img[n, c, min(max(i + l - 2, 0), h - 1), j]
                        out[n, c_n + c, i, j] = ax
                        out[n, 2 * c_n + c, i, j] = ay

    @njit(cache=True, nogil=True)
    def _warp_group(f1, f2, u, v, out, oy):
        for n in range(f1.shape[0]):
            _warp1(f1[n], f2[n], u[n], v[n], out[n], oy)


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int):
    # Plain Python threads running nogil kernels: unlike numba's OpenMP layer they do not
    # spin-wait and fight torch's own OpenMP threads between calls.
    from concurrent.futures import ThreadPoolExecutor

    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vsstar-flow")
        return _POOLS[threads]


def _taps(n_src: int, pos: np.ndarray):
    x = np.clip(pos, 0.0, n_src - 1)
    x0 = np.floor(x)
    return x0.astype(np.int64), np.minimum(x0.astype(np.int64) + 1, n_src - 1), x - x0


def _resize_np(src: np.ndarray, hd: int, wd: int, rx: float, ry: float) -> np.ndarray:
    """Non-centred bilinear resize, dst(i, j) = src((j+1)/rx - 1, (i+1)/ry - 1), (G, C, H, W)."""
    g, c, h, w = src.shape
    x0, x1, dx = _taps(w, (np.arange(wd, dtype=np.float64) + 1.0) / rx - 1.0)
    y0, y1, dy = _taps(h, (np.arange(hd, dtype=np.float64) + 1.0) / ry - 1.0)
    dst = np.empty((g, c, hd, wd))
    _resize(src, x0, x1, dx, y0, y1, dy, dst)
    return dst


def _pyramid_np(img: np.ndarray, ratio: float, min_width: int) -> list:
    levels = [img]
    for src, sigma, radius, r in pyramid_plan(img.shape[-1], ratio, min_width):
        foo = np.empty_like(levels[src])
        _blur(levels[src], np.array(gauss_taps(sigma, radius)), foo)
        r = r if r > 0 else -r / foo.shape[-1]
        levels.append(_resize_np(foo, int(foo.shape[-2] * r), int(foo.shape[-1] * r), r, r))
    return levels


def _features_np(img: np.ndarray, col_type: int, d5: np.ndarray) -> np.ndarray:
    g, c, h, w = img.shape
    if col_type == 0 and c >= 3:
        out = np.empty((g, 5, h, w))
        _features_rgb(img, d5, out)
    else:
        out = np.empty((g, 3 * c, h, w))
        _features_plain(img, d5, out)
    return out


def flow_group_numpy(im1: np.ndarray, im2: np.ndarray, alpha: float, ratio: float, min_width: int,
                     n_outer: int, n_inner: int, n_sor: int, col_type: int,
                     plan: FlowPlan | None = None) -> np.ndarray:
    """Whole coarse-to-fine flow of a group of images, float64 (G, C, H, W) -> (G, 2, H, W).

    Levels that `plan` puts in strips are solved strip by strip (see memory.py).
    """
    ratio = effective_ratio(ratio)
    g5 = np.array(G5, dtype=np.float64)
    d5 = np.array(D5, dtype=np.float64)
    p1 = _pyramid_np(im1, ratio, min_width)
    p2 = _pyramid_np(im2, ratio, min_width)
    u = v = None
    for k in range(len(p1) - 1, -1, -1):
        h, w = p1[k].shape[-2:]
        f2 = _features_np(p2[k], col_type, d5)
        if u is None:
            u = np.zeros((f2.shape[0], h, w))
            v = np.zeros((f2.shape[0], h, w))
        else:
            hs, ws = u.shape[-2:]
            # The C++ code scales by 1/ratio, not by the true size ratio of the levels.
            u = _resize_np(u[:, None], h, w, w / ws, h / hs)[:, 0] * (1.0 / ratio)
            v = _resize_np(v[:, None], h, w, w / ws, h / hs)[:, 0] * (1.0 / ratio)
        strips = plan.strips(k, h) if plan is not None else [(0, h)]
        args = (float(alpha), n_outer + k, n_inner, n_sor + 3 * k, g5, d5)
        if len(strips) == 1:
            f1 = _features_np(p1[k], col_type, d5)
            if k == len(p1) - 1:
                w2 = f2.copy()
            else:
                w2 = np.empty_like(f2)
                _warp_group(f1, f2, u, v, w2, 0)
            _level_group(f1, f2, w2, u, v, *args, 0)
            continue
        u, v = _level_in_strips(p1[k], f2, u, v, strips, plan.overlap, col_type, d5, args, plan.strip_threads)
    return np.stack([u, v], axis=1)


def _level_in_strips(img1: np.ndarray, f2: np.ndarray, u: np.ndarray, v: np.ndarray, strips: list,
                     overlap: int, col_type: int, d5: np.ndarray, args: tuple,
                     threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One level solved strip by strip: each strip grown by `overlap` rows on both sides is solved
    from the level's starting flow, and only its core rows are kept. The strips are independent
    (they read u, v, f2 and write disjoint rows), so `threads` of them may run at once."""
    h = img1.shape[-2]
    nu = np.empty_like(u)
    nv = np.empty_like(v)

    def strip(y0: int, y1: int) -> None:
        a0, a1 = max(0, y0 - overlap), min(h, y1 + overlap)
        # The features' 5-tap derivatives reach 2 rows: computed on 2 more rows each side (or up to
        # the frame's own border), the strip's rows equal the whole-frame features exactly.
        e0, e1 = max(0, a0 - 2), min(h, a1 + 2)
        f1 = _features_np(np.ascontiguousarray(img1[:, :, e0:e1]), col_type, d5)
        f1 = np.ascontiguousarray(f1[:, :, a0 - e0:a1 - e0])
        # Copies: the solver updates them in place, and the next strip starts from the same u, v.
        us = u[:, a0:a1].copy()
        vs = v[:, a0:a1].copy()
        w2 = np.empty_like(f1)
        _warp_group(f1, f2, us, vs, w2, a0)
        _level_group(f1, f2, w2, us, vs, *args, a0)
        nu[:, y0:y1] = us[:, y0 - a0:y1 - a0]
        nv[:, y0:y1] = vs[:, y0 - a0:y1 - a0]

    if threads > 1:
        # Only planned with one image in flight, i.e. from the caller's thread, never from a pool worker.
        list(_pool(threads).map(lambda se: strip(*se), strips))
    else:
        for y0, y1 in strips:
            strip(y0, y1)
    return nu, nv


def flow_numpy(im1: np.ndarray, im2: np.ndarray, alpha: float, ratio: float, min_width: int,
               n_outer: int, n_inner: int, n_sor: int, col_type: int, plan: FlowPlan) -> np.ndarray:
    """Batched flow of (N, C, H, W) float32 or float64 arrays, computed in float64, returned in the
    inputs' dtype; `plan` (memory.plan_flow) gives the threads, the group size and the strips."""
    n = im1.shape[0]
    bounds = [(s, min(s + plan.group, n)) for s in range(0, n, plan.group)]
    out = np.empty((n, 2) + im1.shape[-2:], dtype=im1.dtype)

    def job(se):
        s, e = se
        # float64 copies per group, not for the whole batch at once: they are the pyramids' level 0.
        a = np.ascontiguousarray(im1[s:e], dtype=np.float64)
        b = np.ascontiguousarray(im2[s:e], dtype=np.float64)
        out[s:e] = flow_group_numpy(a, b, alpha, ratio, min_width, n_outer, n_inner, n_sor, col_type, plan)

    if plan.threads == 1 or len(bounds) == 1:
        for se in bounds:
            job(se)
    else:
        list(_pool(plan.threads).map(job, bounds))
    return out
