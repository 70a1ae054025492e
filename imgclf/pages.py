"""The app's two pages (`serve.py`): plain HTML, CSS and JavaScript, no outside files, so they work offline.

/        drop, paste or pick pictures: each one's label, probabilities and Grad-CAM overlay
/review  the suspect labels and duplicate pairs that training flagged, with their pictures: move a file to
         another class folder or set it aside, undo any move, then retrain with the command shown
"""

import html
import json

STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } nav a { margin-right: 1em; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; background: #fafafa; }
#drop.over { background: #e8f0fe; border-color: #36c; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; margin-top: 1em; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: .8em; width: 300px; }
.card img { width: 100%; border-radius: 4px; }
.label { font-size: 1.3em; font-weight: 600; } .error { color: #b00; }
.bar { background: #36c; height: .6em; border-radius: 3px; }
table { border-collapse: collapse; width: 100%; } td { padding: .1em .3em; vertical-align: middle; }
.pair { display: flex; gap: .5em; } .pair > div, .pair > img { width: 50%; min-width: 0; }
button { margin: .2em .2em 0 0; } code { background: #f3f3f3; padding: .1em .3em; }
"""


def try_page(class_names):
    """The page at /: pictures in, labels out."""
    names = ", ".join(html.escape(name) for name in class_names)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Try the model</title>
<style>{STYLE}</style></head><body>
<nav><a href="/">Try the model</a><a href="/review">Review the data</a></nav>
<h1>Try the model</h1><p>Classes: {names}.</p>
<div id="drop">Drop pictures here, paste one, or <input id="pick" type="file" accept="image/*" multiple></div>
<div id="results" class="cards"></div>
<script>
const results = document.getElementById("results"), drop = document.getElementById("drop");
async function answer(response) {{
  if (response.ok) return response;
  let message = response.statusText;
  try {{ message = (await response.json()).error; }} catch (e) {{}}
  throw new Error(message);
}}
async function label(file) {{
  const card = document.createElement("div");
  card.className = "card result";
  card.innerHTML = '<div class="pair"><img class="picture" alt=""><img class="overlay" alt="Grad-CAM" hidden>' +
    '</div><div class="label">…</div><table class="probabilities"></table><div class="error"></div>';
  card.querySelector(".picture").src = URL.createObjectURL(file);
  results.prepend(card);
  const send = (path) => fetch(path, {{method: "POST", body: file,
    headers: {{"Content-Type": file.type || "application/octet-stream"}}}}).then(answer);
  try {{
    const result = await (await send("/api/predict")).json();
    card.querySelector(".label").textContent = result.label + " " + (100 * result.confidence).toFixed(1) + "%";
    card.querySelector(".probabilities").innerHTML = Object.entries(result.probabilities).map(([name, p]) =>
      `<tr><td>${{name.replace(/[<>&]/g, "")}}</td><td style="width:60%">` +
      `<div class="bar" style="width:${{100 * p}}%"></div></td><td>${{(100 * p).toFixed(1)}}%</td></tr>`).join("");
    const overlay = card.querySelector(".overlay");
    overlay.src = URL.createObjectURL(await (await send("/api/explain")).blob());
    overlay.hidden = false;
  }} catch (error) {{
    card.querySelector(".error").textContent = error.message;
    if (card.querySelector(".label").textContent === "…") card.querySelector(".label").textContent = "";
  }}
}}
const each = (files) => Array.from(files).filter((file) => file.size).forEach(label);
document.getElementById("pick").addEventListener("change", (event) => each(event.target.files));
drop.addEventListener("dragover", (event) => {{ event.preventDefault(); drop.classList.add("over"); }});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {{
  event.preventDefault(); drop.classList.remove("over"); each(event.dataTransfer.files);
}});
document.addEventListener("paste", (event) => each(event.clipboardData.files));
</script></body></html>"""


def review_page():
    """The page at /review: training's flags, one click to move or set aside, every move undoable."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Review the data</title>
<style>{STYLE}</style></head><body>
<nav><a href="/">Try the model</a><a href="/review">Review the data</a></nav>
<h1>Review the data</h1>
<p id="folder"></p><div id="status" class="error"></div>
<h2>Possible label errors</h2><div id="suspects" class="cards"></div>
<h2>Duplicates</h2><div id="duplicates" class="cards"></div>
<h2>What was done</h2><table id="log"></table>
<p>Then retrain: <code id="retrain"></code></p>
<script>
const SET_ASIDE = {json.dumps("_set_aside")};
let token = new URLSearchParams(location.search).get("token") || sessionStorage.getItem("token") || "";
const text = (value) => String(value).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
const picture = (path) => `<img src="/api/image?path=${{encodeURIComponent(path)}}" alt="${{text(path)}}">`;
async function act(path, body) {{
  document.getElementById("status").textContent = "";
  let response = await post(path, body);
  if (response.status === 403) {{
    token = prompt("This server needs its token (printed where it started):") || "";
    sessionStorage.setItem("token", token);
    response = await post(path, body);
  }}
  if (!response.ok) document.getElementById("status").textContent = (await response.json()).error;
  await show();
}}
const post = (path, body) => fetch(path, {{method: "POST", body: JSON.stringify(body),
  headers: {{"Content-Type": "application/json", "X-Token": token}}}});
function buttons(place, classes) {{
  if (!place.exists) return '<div class="error">moved or set aside</div>';
  const others = (classes[place.split] || []).filter((name) => name !== place.folder);
  return others.map((name) => `<button class="move" data-path="${{text(place.relative)}}" data-to="${{text(name)}}">` +
    `Move to ${{text(name)}}</button>`).join("") +
    `<button class="aside" data-path="${{text(place.relative)}}" data-to="${{SET_ASIDE}}">Set aside</button>`;
}}
async function show() {{
  const response = await fetch("/api/review");
  const items = await response.json();
  if (!response.ok) {{ document.getElementById("status").textContent = items.error; return; }}
  document.getElementById("folder").textContent = `Data folder: ${{items.data_dir}} (moves stay inside it; ` +
    `set-aside files go to ${{SET_ASIDE}}/; every action is in ${{items.log_file}}).`;
  document.getElementById("retrain").textContent = items.retrain;
  document.getElementById("suspects").innerHTML = items.suspects.length ? items.suspects.map((row) =>
    `<div class="card suspect" data-path="${{text(row.relative)}}">${{row.exists ? picture(row.relative) : ""}}` +
    `<div>${{text(row.relative)}}</div><div>filed as <b>${{text(row.label)}}</b>, looks like ` +
    `<b>${{text(row.suggested_label)}}</b> (${{(100 * row.probability_of_suggested).toFixed(0)}}%)</div>` +
    buttons(row, items.classes) + "</div>").join("") : "<p>None flagged.</p>";
  document.getElementById("duplicates").innerHTML = items.duplicates.length ? items.duplicates.map((row) =>
    `<div class="card duplicate"><div class="pair">` + [row.first, row.second].map((place) =>
    `<div>${{place.exists ? picture(place.relative) : ""}}<div>${{text(place.relative)}}</div>` +
    `${{buttons(place, items.classes)}}</div>`).join("") + `</div><div>${{text(row.kind)}} copies</div></div>`).join("")
    : "<p>None found.</p>";
  const undone = new Set(items.log.filter((entry) => entry.action === "undo").map((entry) => entry.undoes));
  document.getElementById("log").innerHTML = items.log.slice().reverse().map((entry) =>
    `<tr class="entry"><td>${{text(entry.time)}}</td><td>${{text(entry.action)}}</td>` +
    `<td>${{text(entry.from)}} → ${{text(entry.to)}}</td><td>` + (entry.action === "move" && !undone.has(entry.index)
    ? `<button class="undo" data-index="${{entry.index}}">Undo</button>` : "") + "</td></tr>").join("");
}}
document.addEventListener("click", (event) => {{
  const button = event.target.closest("button");
  if (!button) return;
  if (button.dataset.index !== undefined) act("/api/undo", {{index: Number(button.dataset.index)}});
  else act("/api/move", {{path: button.dataset.path, to: button.dataset.to}});
}});
show();
</script></body></html>"""
