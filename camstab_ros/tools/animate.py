"""
`camstab animate`: what the audience sees, as an animated GIF.

Two views side by side, the virtual LED wall seen through the noisy camera and through
the stabilised one: the wall's grid is drawn where the render engine would put it on
screen (the screen-space view of DESIGN.md: the metric's grid on a wall in front of the
true camera), its error from the right place magnified so that a few pixels on a 4K frame
show; the on-screen error in pixels is written on each view, and a strip chart below runs
a time cursor over both errors. A wall that shakes on the left and holds on the right is
the stabiliser doing its job. Written with Pillow through matplotlib (no ffmpeg needed).
"""
import logging

from camstab_ros.core.evaluation import matched_truth, run_take
from camstab_ros.core.metrics import screen_errors, ScreenView
from camstab_ros.tools.common import add_view_arguments, UsageError, view_of
from camstab_ros.tools.takes import add_time_unit_argument, read_take
import numpy as np


DEFAULT_FPS = 25.0
DEFAULT_SECONDS = 10.0
# On-screen errors are drawn this many times larger (a 2 px shake on 3840 px is invisible
# in a 900 px wide GIF otherwise); the figure says so.
MAGNIFY = 40.0
FIGURE_INCHES, DPI = (9.0, 5.0), 80


def configure_animate(parser):
    """Add the options of `camstab animate` to parser."""
    parser.add_argument('truth', help='ground-truth trajectory')
    parser.add_argument('noisy', help='the tracker trajectory (same stamps as the truth)')
    parser.add_argument('stabilised', nargs='?',
                        help='the stabilised trajectory (default: NOISY through --method)')
    parser.add_argument('--method', default='kalman',
                        help='with no STABILISED: the method to stabilise NOISY (default kalman)')
    parser.add_argument('--out', default='audience.gif', help='the GIF to write')
    parser.add_argument('--seconds', type=float, default=DEFAULT_SECONDS,
                        help=f'length of the animation, from the start (default '
                        f'{DEFAULT_SECONDS:g})')
    parser.add_argument('--fps', type=float, default=DEFAULT_FPS,
                        help=f'frames per second of the GIF (default {DEFAULT_FPS:g})')
    add_view_arguments(parser)
    add_time_unit_argument(parser)


def run_animate(args):
    """Write the audience's view of NOISY and STABILISED against TRUTH as a GIF."""
    if not (0.0 < args.seconds <= 600.0 and 1.0 <= args.fps <= 60.0):
        raise UsageError('need 0 < --seconds <= 600 and 1 <= --fps <= 60')
    truth, truth_t = read_take(args.truth, args.time_unit)
    noisy, t = read_take(args.noisy, args.time_unit)
    try:
        truth_p, truth_q = matched_truth(truth_t, truth.p, truth.q, t)
        if args.stabilised:
            stab, stab_t = read_take(args.stabilised, args.time_unit)
            stab_p, stab_q = matched_truth(stab_t, stab.p, stab.q, t)
        else:
            result = run_take(args.method, t, noisy.p, noisy.q)
            stab_p, stab_q = result.p, result.q
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    frames = write_animation(args.out, t, (truth_p, truth_q), (noisy.p, noisy.q),
                             (stab_p, stab_q), view_of(args), args.fps, args.seconds)
    print(f'wrote {args.out}: {frames} frames at {args.fps:g} fps')
    return 0


def write_animation(path, t, truth, noisy, stabilised, view=ScreenView(), fps=DEFAULT_FPS,
                    seconds=DEFAULT_SECONDS):
    """
    Write the GIF of two views (noisy | stabilised) and the error strip; return its frames.

    truth, noisy, stabilised: (p (N, 3), q (N, 4)) at the stamps t (N,) in seconds.
    """
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import animation
    from matplotlib import pyplot as plt

    t = np.asarray(t, dtype=float) - t[0]
    errors = {name: screen_errors(p, q, *truth, view) for name, (p, q) in
              (('noisy', noisy), ('stabilised', stabilised))}
    rms = {name: np.sqrt(np.mean(np.sum(e ** 2, axis=-1), axis=1)) for name, e in errors.items()}
    instants = np.arange(0.0, min(seconds, t[-1]), 1.0 / fps)
    rows = np.minimum(np.searchsorted(t, instants), len(t) - 1)
    grid = _grid_pixels(view)
    fig = plt.figure(figsize=FIGURE_INCHES, dpi=DPI)
    views = [fig.add_axes([0.02 + 0.5 * k, 0.36, 0.46, 0.52]) for k in (0, 1)]
    strip = fig.add_axes([0.08, 0.08, 0.9, 0.22])
    half_w, half_h = 0.5 * view.width_px, 0.5 * view.width_px * 9.0 / 16.0
    lines, labels = {}, {}
    for ax, name, color in ((views[0], 'noisy', 'tab:red'), (views[1], 'stabilised', 'tab:blue')):
        ax.set_xlim(-half_w, half_w)
        ax.set_ylim(-half_h, half_h)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor('0.12')
        ax.plot(grid[..., 0].ravel(), grid[..., 1].ravel(), '+', color='0.6', ms=10)
        lines[name] = [ax.plot([], [], '-o', color=color, lw=2, ms=5)[0]
                       for _ in range(grid.shape[0] + grid.shape[1])]
        labels[name] = ax.set_title('', fontsize=11)
        strip.plot(t, rms[name], color=color, lw=0.8, label=name)
    fig.suptitle(f'the LED wall through the camera (errors magnified x{MAGNIFY:g}; '
                 f'{view.width_px:g} px, {view.fov_deg:g} deg, wall at {view.wall_m:g} m)',
                 fontsize=10, y=0.99)
    strip.set_xlim(0.0, instants[-1] if len(instants) else t[-1])
    strip.set_ylim(0.0, 1.1 * max(np.max(rms['noisy'][rows]), 1e-9))
    strip.set_xlabel('time (s)')
    strip.set_ylabel('on-screen error (px)')
    strip.legend(loc='upper right', fontsize=8)
    cursor = strip.axvline(0.0, color='k', lw=1)

    def draw(k):
        row = rows[k]
        for name in ('noisy', 'stabilised'):
            seen = grid + MAGNIFY * errors[name][row].reshape(grid.shape)
            for line, points in zip(lines[name], [*seen, *seen.transpose(1, 0, 2)]):
                line.set_data(points[:, 0], points[:, 1])
            labels[name].set_text(f'{name}: {rms[name][row]:.2f} px')
        cursor.set_xdata([instants[k], instants[k]])
        return [cursor]

    movie = animation.FuncAnimation(fig, draw, frames=len(instants), blit=False)
    logging.getLogger('matplotlib.animation').setLevel(logging.WARNING)
    movie.save(str(path), writer=animation.PillowWriter(fps=fps))
    plt.close(fig)
    return len(instants)


def _grid_pixels(view):
    """Return where the metric's wall grid sits on screen (rows, columns, 2) in pixels."""
    body = view.grid_body()
    f = view.focal_px
    u, v = -f * body[:, 1] / body[:, 0], f * body[:, 2] / body[:, 0]
    side = int(round(np.sqrt(len(body))))
    return np.stack([u, v], axis=-1).reshape(side, side, 2)
