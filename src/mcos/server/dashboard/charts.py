"""The spend chart, drawn on the server as SVG: no chart library, nothing fetched at run time."""

from __future__ import annotations

from collections import defaultdict
from html import escape

from mcos.domain.budget import MICROS
from mcos.store.protocol import UsageRow

PALETTE = ("#3b6ea5", "#c0504d", "#9bbb59", "#8064a2", "#4bacc6", "#f79646", "#2c4d75",
           "#772c2a", "#5f7530", "#4d3b62", "#276a7c", "#b65708")  # fmt: skip
WIDTH, HEIGHT, PAD = 720, 240, 36


def _tokens(r: UsageRow) -> float:
    u = r.usage
    return float(u.input + u.output + u.cache_read + u.cache_write)


def _dollars(r: UsageRow) -> float:
    return r.cost_micros / MICROS


def spend_chart(rows: list[UsageRow], days: list[str]) -> str:
    """Stacked bars per day, one colour per agent, with a legend: dollars — or tokens when no
    call cost anything (a local model, a free tier), so model use never draws an empty chart."""
    in_tokens = not any(r.cost_micros for r in rows) and any(_tokens(r) for r in rows)
    measure, unit = (_tokens, "tokens") if in_tokens else (_dollars, "dollars")

    def shown(value: float) -> str:
        return f"{value:,.0f} tokens" if in_tokens else f"${value:.4f}"

    by_day: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by_day[r.day][r.agent] = by_day[r.day].get(r.agent, 0.0) + measure(r)
    agents = sorted({r.agent for r in rows})
    top = max((sum(by_day[d].values()) for d in days), default=0.0) or 1.0
    slot = (WIDTH - 2 * PAD) / max(len(days), 1)
    caption = (
        f"max {top:,.0f} tokens a day (no dollar cost recorded)"
        if in_tokens
        else (f"max ${top:.2f} a day")
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 60}" '
        f'role="img" aria-label="Model use per day in {unit}" class="chart" data-unit="{unit}">',
        f'<text x="{PAD}" y="14" font-size="12">{caption}</text>',
    ]
    for i, day in enumerate(days):
        x = PAD + i * slot + 2
        y = float(HEIGHT)
        for j, agent in enumerate(agents):
            value = by_day[day].get(agent, 0.0)
            if value <= 0:
                continue
            h = (HEIGHT - 2 * PAD) * value / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot - 4:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(agent)} {day}: '
                f"{shown(value)}</title></rect>"
            )
        parts.append(
            f'<text x="{x + slot / 2 - 2:.1f}" y="{HEIGHT + 14}" font-size="9" '
            f'text-anchor="middle">{day[5:]}</text>'
        )
    for j, agent in enumerate(agents):
        lx = PAD + (j % 6) * 110
        ly = HEIGHT + 32 + (j // 6) * 14
        parts.append(
            f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" '
            f'fill="{PALETTE[j % len(PALETTE)]}"/><text x="{lx + 14}" y="{ly}" '
            f'font-size="11">{escape(agent)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
