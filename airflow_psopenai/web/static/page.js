// The OpenAI page: reads /psopenai/api/batches and renders it with DOM calls only (text, never HTML).
"use strict";

const REFRESH_MS = 10000;
const PAGE_LIMIT = 100;
const CONSOLE = "https://platform.openai.com/";
const params = new URLSearchParams(window.location.search);
const runFilter = { dag_id: params.get("dag_id"), run_id: params.get("run_id") };
// Airflow's UI lives where this app is mounted, minus its prefix.
const airflowRoot = window.location.pathname.replace(/\/psopenai(\/.*)?$/, "");
let lastId = null;
// Refreshing would drop the pages read with "More": it stops once the user asked for more.
let pinned = false;

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text || "";
  box.hidden = !text;
  box.classList.toggle("error", Boolean(isError));
}

function age(createdAt) {
  if (typeof createdAt !== "number") return "";
  const seconds = Math.max(0, Date.now() / 1000 - createdAt);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d`;
}

function requestsCell(counts) {
  const cell = el("td");
  if (!counts || typeof counts.total !== "number") return cell;
  const done = (Number(counts.completed) || 0) + (Number(counts.failed) || 0);
  const bar = el("progress", null, { max: String(Math.max(counts.total, 1)), value: String(done) });
  cell.append(bar, ` ${done} / ${counts.total}`);
  return cell;
}

function tokensCell(usage) {
  const total = usage && typeof usage.total_tokens === "number" ? usage.total_tokens.toLocaleString() : "";
  return el("td", total);
}

function runCell(item) {
  const cell = el("td");
  if (!item.dag_id || !item.run_id) {
    cell.textContent = item.deployment ? `untagged (${item.deployment})` : "untagged";
    return cell;
  }
  const href = `${airflowRoot}/dags/${encodeURIComponent(item.dag_id)}/runs/${encodeURIComponent(item.run_id)}`;
  cell.append(el("a", `${item.dag_id} / ${item.run_id}`, { href, target: "_top" }));
  return cell;
}

function idCell(item) {
  const cell = el("td", null, { class: "id" });
  if (typeof item.console_url === "string" && item.console_url.startsWith(CONSOLE)) {
    cell.append(el("a", item.id, { href: item.console_url, target: "_blank", rel: "noopener noreferrer" }));
  } else {
    cell.textContent = item.id;
  }
  return cell;
}

async function post(path) {
  const answer = await fetch(path, { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.detail || `${answer.status} ${answer.statusText}`);
  return body;
}

function cancelButton(item, row) {
  const button = el("button", "Cancel", { type: "button" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const result = await post(`api/batches/${encodeURIComponent(item.id)}/cancel`);
      row.querySelector(".status").textContent = result.status || "";
      notice(`Batch ${result.id}: ${result.action.replaceAll("_", " ")}.`);
    } catch (error) {
      notice(`Batch ${item.id} was not cancelled: ${error.message}`, true);
      button.disabled = false;
    }
  });
  return button;
}

function render(items, append) {
  const body = document.querySelector("#batches tbody");
  if (!append) body.replaceChildren();
  for (const item of items) {
    const row = el("tr", null, { "data-id": item.id });
    const actions = el("td");
    if (item.can_cancel) actions.append(cancelButton(item, row));
    row.append(
      idCell(item),
      el("td", item.status, { class: "status" }),
      requestsCell(item.request_counts),
      tokensCell(item.usage),
      el("td", age(item.created_at)),
      el("td", item.model),
      runCell(item),
      el("td", item.task_id === null ? "" : item.map_index === null ? item.task_id : `${item.task_id} [${item.map_index}]`),
      actions,
    );
    body.append(row);
  }
  document.getElementById("empty").hidden = body.children.length > 0;
  document.getElementById("cancel-run").hidden = !(runFilter.dag_id && runFilter.run_id && items.some((item) => item.can_cancel));
}

async function load(append) {
  const query = new URLSearchParams({ status: document.getElementById("status").value, limit: String(PAGE_LIMIT) });
  if (runFilter.dag_id) query.set("dag_id", runFilter.dag_id);
  if (runFilter.run_id) query.set("run_id", runFilter.run_id);
  if (append && lastId) query.set("after", lastId);
  try {
    const answer = await fetch(`api/batches?${query}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(body.detail || `${answer.status} ${answer.statusText}`);
    render(body.data, append);
    lastId = body.last_id;
    document.getElementById("more").hidden = !body.has_more;
    notice(body.incomplete ? `The list is incomplete: ${body.incomplete}` : "", Boolean(body.incomplete));
  } catch (error) {
    notice(`The batches could not be listed: ${error.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (runFilter.dag_id && runFilter.run_id) {
    document.getElementById("title").textContent = `OpenAI batches of ${runFilter.dag_id} / ${runFilter.run_id}`;
    document.getElementById("status").value = "all";
  }
  document.getElementById("status").addEventListener("change", () => load(false));
  document.getElementById("refresh").addEventListener("click", () => load(false));
  document.getElementById("more").addEventListener("click", () => {
    pinned = true;
    load(true);
  });
  document.getElementById("cancel-run").addEventListener("click", async (event) => {
    event.target.disabled = true;
    try {
      const path = `api/dags/${encodeURIComponent(runFilter.dag_id)}/runs/${encodeURIComponent(runFilter.run_id)}/cancel`;
      notice((await post(path)).summary);
      await load(false);
    } catch (error) {
      notice(`The run's batches were not cancelled: ${error.message}`, true);
    } finally {
      event.target.disabled = false;
    }
  });
  load(false);
  window.setInterval(() => {
    if (!document.hidden && !pinned) load(false);
  }, REFRESH_MS);
});
