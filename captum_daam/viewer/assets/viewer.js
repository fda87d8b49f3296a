(function () {
  const DATA = JSON.parse(document.getElementById("daam-data").textContent);
  const B = DATA.blocks;
  const state = { block: B - 1, mode: "accumulated", opacity: {{alpha}}, rank: null };
  const ranks = DATA.images.map(() => 0);
  const slider = document.getElementById("block");
  const opacity = document.getElementById("opacity");
  const label = document.getElementById("block-label");
  const play = document.getElementById("play");
  const rankSelect = document.getElementById("rank");
  let timer = null;

  function buildPanels() {
    const main = document.querySelector("main");
    DATA.images.forEach((image, i) => {
      const panel = document.createElement("section");
      panel.className = "panel";
      panel.id = "panel-" + i;
      const title = document.createElement("h2");
      title.textContent = image.name;
      const stack = document.createElement("div");
      stack.className = "stack";
      const base = document.createElement("img");
      base.className = "image";
      base.alt = image.name;
      base.src = image.src;
      const heat = document.createElement("img");
      heat.className = "heat";
      heat.alt = "DAAM map";
      stack.append(base, heat);
      const classes = document.createElement("div");
      classes.className = "classes";
      image.classes.forEach((entry, r) => {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.rank = r;
        button.textContent = "#" + (r + 1) + " " + entry.label +
          " (logit " + entry.score.toFixed(2) + ")";
        button.title = entry.label;
        button.addEventListener("click", () => {
          ranks[i] = r; state.rank = null; rankSelect.value = ""; render();
        });
        classes.append(button);
      });
      const bars = document.createElement("div");
      bars.className = "bars";
      bars.title = "share of the final map per block";
      for (let b = 0; b < B; b++) {
        const bar = document.createElement("div");
        bar.dataset.block = b;
        bar.addEventListener("click", () => { state.block = b; render(); });
        bars.append(bar);
      }
      const caption = document.createElement("div");
      caption.className = "caption";
      caption.textContent = "share of the final map per block";
      panel.append(title, stack, classes, bars, caption);
      main.append(panel);
    });
  }

  function render() {
    const b = state.block;
    slider.value = String(b + 1);
    opacity.value = String(Math.round(state.opacity * 100));
    const symbol = state.mode === "accumulated" ? "D" : "L";
    const layer = DATA.layer_names[b] || "";
    label.replaceChildren(symbol, Object.assign(document.createElement("sub"),
      { textContent: String(b + 1) }), " of " + B + (layer ? " (" + layer + ")" : ""));
    document.querySelectorAll("input[name=mode]").forEach((radio) => {
      radio.checked = radio.value === state.mode;
    });
    DATA.images.forEach((image, i) => {
      const panel = document.getElementById("panel-" + i);
      const rank = Math.min(ranks[i], image.classes.length - 1);
      const entry = image.classes[rank];
      const heat = panel.querySelector("img.heat");
      heat.src = entry[state.mode][b];
      heat.dataset.frame = [i, rank, state.mode, b].join("/");
      heat.style.opacity = String(state.opacity);
      panel.querySelectorAll(".classes button").forEach((button) => {
        button.classList.toggle("active", Number(button.dataset.rank) === rank);
      });
      const peak = Math.max(...entry.contributions, 1e-12);
      panel.querySelectorAll(".bars div").forEach((bar, k) => {
        bar.style.height = (100 * entry.contributions[k] / peak) + "%";
        bar.title = "block " + (k + 1) + ": " + (100 * entry.contributions[k]).toFixed(1) + "%";
        bar.classList.toggle("current", k === b);
      });
    });
    const fragment = "#block=" + (b + 1) + "&mode=" +
      (state.mode === "accumulated" ? "acc" : "block") +
      "&opacity=" + state.opacity.toFixed(2) +
      (state.rank === null ? "" : "&rank=" + state.rank);
    if (location.hash !== fragment) history.replaceState(null, "", fragment);
  }

  function readFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const block = parseInt(params.get("block"), 10);
    if (block >= 1 && block <= B) state.block = block - 1;
    const mode = params.get("mode");
    if (mode === "acc" || mode === "accumulated") state.mode = "accumulated";
    if (mode === "block" || mode === "block_maps") state.mode = "block_maps";
    const alpha = parseFloat(params.get("opacity"));
    if (alpha >= 0 && alpha <= 1) state.opacity = alpha;
    const rank = parseInt(params.get("rank"), 10);
    if (rank >= 0) { state.rank = rank; ranks.fill(rank); rankSelect.value = String(rank); }
  }

  function stop() { clearInterval(timer); timer = null; play.textContent = "Play"; }

  buildPanels();
  slider.max = String(B);
  const depth = Math.max(...DATA.images.map((image) => image.classes.length));
  for (let r = 0; r < depth; r++) {
    const option = document.createElement("option");
    option.value = String(r);
    option.textContent = "top-" + (r + 1);
    rankSelect.append(option);
  }
  slider.addEventListener("input", () => { state.block = Number(slider.value) - 1; render(); });
  opacity.addEventListener("input", () => { state.opacity = Number(opacity.value) / 100; render(); });
  document.querySelectorAll("input[name=mode]").forEach((radio) => {
    radio.addEventListener("change", () => { state.mode = radio.value; render(); });
  });
  rankSelect.addEventListener("change", () => {
    if (rankSelect.value === "") { state.rank = null; render(); return; }
    state.rank = Number(rankSelect.value); ranks.fill(state.rank); render();
  });
  play.addEventListener("click", () => {
    if (timer !== null) { stop(); return; }
    play.textContent = "Pause";
    state.block = state.block >= B - 1 ? 0 : state.block;
    render();
    timer = setInterval(() => {
      if (state.block >= B - 1) { stop(); return; }
      state.block += 1; render();
    }, {{frame_ms}});
  });
  window.addEventListener("hashchange", () => { readFragment(); render(); });
  readFragment();
  render();
  document.body.dataset.ready = "true";
})();
