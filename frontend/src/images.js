// Images: per key, a slider over the logged steps and the image with its caption.

import { getImages, imageSource } from "./api.js";
import { el, errorBox } from "./dom.js";

function imagePanel(runId, key) {
  let images = [];
  const slider = el("input", { type: "range", testid: "image-slider", min: "0", max: "0", step: "1", value: "0", "aria-label": `${key} step` });
  const image = el("img", { testid: "image", alt: key });
  const caption = el("div.caption", { testid: "image-caption" });
  const body = el("div.image-body", {}, el("div.slider-row", {}, slider), image, caption);
  const node = el("section.panel", { "data-key": key }, el("h3", {}, key), body);

  function show(i) {
    const item = images[i];
    if (!item) return;
    image.src = imageSource(item.url);
    image.alt = `${key} at step ${item.step}`;
    caption.textContent = item.caption ? `step ${item.step} · ${item.caption}` : `step ${item.step}`;
  }
  slider.addEventListener("input", () => show(Number(slider.value)));

  async function load() {
    try {
      const atEnd = Number(slider.value) >= images.length - 1;
      images = (await getImages(runId, key)).images;
      if (!images.length) {
        body.replaceChildren(el("p.muted", {}, "No images yet."));
        return;
      }
      slider.max = String(images.length - 1);
      slider.disabled = images.length < 2;
      if (atEnd) slider.value = slider.max;
      show(Number(slider.value));
    } catch (err) {
      body.replaceChildren(errorBox(err, `images ${key}`));
    }
  }
  return { node, load };
}

/** All image keys of one run; `refresh()` picks up images a live run has logged since. */
export function imagesSection(runId, keys) {
  const panels = keys.map((key) => imagePanel(runId, key));
  for (const panel of panels) panel.load();
  return {
    node: el("div.panel-grid", {}, panels.map((p) => p.node)),
    refresh: () => Promise.all(panels.map((p) => p.load())),
  };
}
