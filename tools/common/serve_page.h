// serve_page.h: the one HTML page mo_serve shows at GET /: pick or drop an image, see it and the top-5
// classes with probability bars. Plain JavaScript: fetch() POSTs the file's raw bytes to /predict; at
// load it reads GET /health for the model's name and input size (#model). Images smaller than 160 px
// are shown enlarged by a whole factor with pixelated rendering (a 32 px Fashion-MNIST image is
// otherwise a speck). The picker offers only what mo decodes (JPEG, PNG, WebP: data/image_decode.h).
// #results carries data-file (the name of the last file picked) and data-state (busy, done, error), so a
// browser test (tests/tools/test_serve_browser.cpp) can tell when that file's answer is on the page.
#pragma once

namespace mo::tools {

inline constexpr const char* kServePage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mo_serve image classifier</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 760px; margin: 2em auto; padding: 0 1em; color: #222; }
  #drop { border: 2px dashed #888; border-radius: 10px; padding: 2em; text-align: center; cursor: pointer; }
  #drop.over { background: #eef5ff; border-color: #3875d7; }
  #preview { max-width: 100%; max-height: 360px; display: none; margin: 1em auto; border-radius: 6px; }
  #preview.pixelated { image-rendering: pixelated; max-height: none; }
  .row { display: flex; align-items: center; margin: .35em 0; }
  .name { width: 40%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar { flex: 1; background: #eee; border-radius: 4px; height: 1.2em; margin: 0 .6em; }
  .fill { background: #3875d7; height: 100%; border-radius: 4px; }
  .pct { width: 4.5em; text-align: right; font-variant-numeric: tabular-nums; }
  #error { color: #b00020; }
  #meta { color: #666; font-size: .9em; }
</style>
</head>
<body>
<h1 id="title">mo_serve image classifier</h1>
<p id="model"></p>
<p id="meta"></p>
<div id="drop">Drop a JPEG, PNG or WebP image here, or click to choose one
  <input id="file" type="file" accept=".jpg,.jpeg,.png,.webp,image/jpeg,image/png,image/webp" style="display:none">
</div>
<img id="preview" alt="">
<p id="error"></p>
<div id="results"></div>
<script>
const drop = document.getElementById('drop'), input = document.getElementById('file');
const preview = document.getElementById('preview'), results = document.getElementById('results');
const error = document.getElementById('error'), meta = document.getElementById('meta');
const model = document.getElementById('model');
fetch('/health').then(r => r.json()).then(h => {
  const p = h.preprocess;
  document.getElementById('title').textContent = document.title = h.model + ' classifier';
  model.textContent = h.model + ' (' + h.classes + ' classes) on ' + h.device + ', ' + h.precision + ': input ' +
    p.img_size + 'x' + p.img_size + ' px (shorter side to ' + Math.floor(p.img_size / p.crop_pct) + ', ' +
    p.interpolation + ', centre crop)';
}).catch(e => { model.textContent = 'cannot read /health: ' + e; });
const kSmall = 160;  // images smaller than this are shown enlarged
preview.addEventListener('load', () => {
  const w = preview.naturalWidth, h = preview.naturalHeight, k = Math.floor(2 * kSmall / Math.max(w, h));
  const small = Math.max(w, h) < kSmall && k >= 2;
  preview.classList.toggle('pixelated', small);
  preview.style.width = small ? (k * w) + 'px' : '';
  preview.dataset.sized = preview.src;  // for tests: this image's size is set
});
drop.addEventListener('click', () => input.click());
input.addEventListener('change', () => { if (input.files.length) classify(input.files[0]); });
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => {
  e.preventDefault(); drop.classList.remove('over');
  if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]);
});
async function classify(file) {
  error.textContent = ''; results.textContent = 'Classifying...';
  results.dataset.file = file.name; results.dataset.state = 'busy';
  preview.src = URL.createObjectURL(file); preview.style.display = 'block';
  try {
    const r = await fetch('/predict', { method: 'POST', body: file,
                                        headers: { 'Content-Type': 'application/octet-stream' } });
    const j = await r.json();
    results.textContent = '';
    if (!r.ok) { error.textContent = j.error || ('HTTP ' + r.status); results.dataset.state = 'error'; return; }
    meta.textContent = j.model + ' - ' + j.ms.toFixed(0) + ' ms';
    for (const t of j.top5) {
      const row = document.createElement('div'); row.className = 'row';
      const name = document.createElement('span'); name.className = 'name';
      name.textContent = t.name + ' (' + t.index + ')'; name.title = t.name;
      const bar = document.createElement('div'); bar.className = 'bar';
      const fill = document.createElement('div'); fill.className = 'fill';
      fill.style.width = (100 * t.prob).toFixed(1) + '%'; bar.appendChild(fill);
      const pct = document.createElement('span'); pct.className = 'pct';
      pct.textContent = (100 * t.prob).toFixed(2) + '%';
      row.append(name, bar, pct); results.appendChild(row);
    }
    results.dataset.state = 'done';
  } catch (e) { results.textContent = ''; error.textContent = String(e); results.dataset.state = 'error'; }
}
</script>
</body>
</html>
)HTML";

}  // namespace mo::tools
