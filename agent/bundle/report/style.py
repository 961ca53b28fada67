"""The report's inline style: readable on screen, a few pages on paper."""

STYLE = """
:root{--ink:#1b1b1b;--muted:#5b6470;--line:#d9dde3;--soft:#f5f6f8;--ok:#1e7b34;--okbg:#e8f5ec;--bad:#b42318;
--badbg:#fdecea;--warn:#9a5b00;--warnbg:#fff4e0;--info:#1f4e8c;--infobg:#eaf1fb}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0 auto;
max-width:62em;padding:1.2em 1.4em 3em}
h1{font-size:1.45em;margin:.2em 0 .1em}h1 small{font-weight:400;color:var(--muted);font-size:.7em}
h2{font-size:1.12em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:2px solid var(--line)}
h2 .n{color:var(--muted);font-weight:400}h3{font-size:1em;margin:1em 0 .3em}
code,pre,.mono{font-family:ui-monospace,"SF Mono",Menlo,Consolas,monospace;font-size:12.5px}
p{margin:.4em 0}.muted{color:var(--muted)}.empty{color:var(--muted);font-style:italic}
.banner{border-radius:6px;padding:.7em 1em;margin:.8em 0;border:1px solid}
.banner b{display:block;font-size:1.05em;margin-bottom:.15em}
.banner.ok{background:var(--okbg);border-color:#9fd3ae;color:#0f4d20}
.banner.bad{background:var(--badbg);border-color:#f1a59d;color:#7a1209}
.banner.info{background:var(--infobg);border-color:#a9c4ea;color:#17365f}
.banner.unk{background:var(--soft);border-color:var(--line)}
.banner code{background:rgba(255,255,255,.7);padding:0 .25em;border-radius:3px;word-break:break-all}
dl.facts{display:grid;grid-template-columns:9em 1fr;gap:.25em 1em;margin:.6em 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere}
.tiles{display:flex;flex-wrap:wrap;gap:.5em;margin:.8em 0}
.tile{flex:1 1 8.5em;border:1px solid var(--line);border-radius:6px;padding:.45em .7em;text-decoration:none;
color:inherit;background:#fff}
.tile .n{display:block;font-size:1.5em;font-weight:650;line-height:1.15}.tile .l{font-size:.85em;color:var(--muted)}
.tile.bad{border-color:#f1a59d;background:var(--badbg)}.tile.bad .n{color:var(--bad)}
.tile.warn{border-color:#f0c98a;background:var(--warnbg)}.tile.warn .n{color:var(--warn)}
.tile.zero .n{color:var(--muted)}
blockquote{margin:.5em 0;padding:.4em .9em;border-left:4px solid #a9c4ea;background:var(--infobg);white-space:pre-wrap;
overflow-wrap:anywhere}blockquote cite{display:block;font-style:normal;color:var(--muted);font-size:.85em}
.flag{color:var(--warn);font-weight:600}
table{border-collapse:collapse;width:100%;margin:.3em 0;table-layout:fixed}
th,td{border-bottom:1px solid var(--line);padding:.25em .45em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:var(--soft);font-weight:600;font-size:.9em}
td.t,th.t{width:6.2em;white-space:nowrap;color:var(--muted)}td.n,th.n{width:5.5em;text-align:right}
td.op,th.op{width:6.5em}
.way{border:1px solid var(--line);border-left:4px solid var(--bad);border-radius:4px;padding:.4em .7em;margin:.4em 0}
.way.pkg{border-left-color:#8c96a3}.way .what{font-weight:600;overflow-wrap:anywhere}.way .why{color:var(--muted)}
.change{margin:.7em 0;break-inside:avoid}.change .head{display:flex;gap:.6em;flex-wrap:wrap;align-items:baseline}
.change .path{font-weight:600;overflow-wrap:anywhere}
pre.diff{margin:.25em 0 0;padding:.4em .6em;background:var(--soft);border:1px solid var(--line);border-radius:4px;
white-space:pre-wrap;overflow-wrap:anywhere;width:100%}
pre.diff .a{background:#e6f6ea;color:#0f4d20;display:block}pre.diff .d{background:#fdecea;color:#7a1209;display:block}
pre.diff .h{color:var(--info);display:block}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:1.2em}ul.tree{padding-left:0}
ul.tree li{position:relative;padding:.08em 0}ul.tree ul li::before{content:"└";position:absolute;left:-1em;
color:#9aa3ad}ul.tree .cmd{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;overflow-wrap:anywhere}
ul.tree .meta{color:var(--muted);font-size:.85em}
details{border:1px solid var(--line);border-radius:4px;margin:.25em 0;padding:.2em .6em}
details summary{cursor:pointer;overflow-wrap:anywhere}details[open] summary{margin-bottom:.2em}
.programs{columns:3 14em;margin:.3em 0;padding:0;list-style:none}.programs li{break-inside:avoid}
.timeline .k{width:9em}.timeline td.k{font-weight:600}
tr.bad td{background:var(--badbg)}tr.warn td{background:var(--warnbg)}
.more{color:var(--muted);font-style:italic;margin:.3em 0}
footer{margin-top:2.5em;color:var(--muted);font-size:.85em;border-top:1px solid var(--line);padding-top:.6em}
@media print{body{max-width:none;padding:0;font-size:11.5px}h2{break-after:avoid;margin-top:1.1em}
@page{margin:14mm 12mm}.tile{break-inside:avoid}details{border:none;padding:0}a{color:inherit;text-decoration:none}}
"""
