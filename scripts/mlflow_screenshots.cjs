// Screenshots of a sweep in the MLflow UI, as a researcher sees it (see mlflow_screenshots.sh):
//   runs_grouped.png   the runs table grouped by the tag `variant`, sorted by aubc/accuracy
//   accuracy_chart.png the chart view grouped the same way: accuracy, mean ± band per strategy
//   report_html.png    the sweep parent's report/report.html in the artifact viewer
// usage: node mlflow_screenshots.cjs UI_URL EXPERIMENT OUT_DIR   (needs playwright-core, chromium)
const { chromium } = require('playwright-core');
const path = require('path');

const [ui, experiment, out] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

async function api(route, body) {
  const res = await fetch(`${ui}/ajax-api/2.0/mlflow/${route}`, body ? {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) } : {});
  if (!res.ok) throw new Error(`${route}: HTTP ${res.status}`);
  return res.json();
}

(async () => {
  const exp = (await api(`experiments/get-by-name?experiment_name=${encodeURIComponent(experiment)}`)).experiment;
  const found = await api('runs/search', { experiment_ids: [exp.experiment_id], max_results: 1,
    filter: "tags.`mlflow.fishermask.role` = 'sweep'", order_by: ['attributes.start_time DESC'] });
  const parent = found.runs[0].info.run_id;
  // The runs view's state lives in the browser's local storage (not in the URL): group by the
  // tag `variant`, show the summary columns, keep MLflow's assistant panel closed.
  const state = {
    searchFilter: '', orderByKey: 'metrics.`aubc/accuracy`', orderByAsc: false, startTime: 'ALL',
    lifecycleFilter: 'Active', datasetsFilter: [], modelVersionFilter: 'All Runs',
    selectedColumns: ['metrics.`aubc/accuracy`', 'metrics.`final/accuracy`', 'attributes.`Dataset`'],
    columnOrder: [], columnWidths: {}, runsExpanded: {}, runsPinned: [], runsHidden: [],
    runsVisibilityMap: {}, runsHiddenMode: 'FIRST_10_RUNS', viewMaximized: false,
    runListHidden: false, isAccordionReordered: false, useGroupedValuesInCharts: true,
    hideEmptyCharts: true, groupsExpanded: {}, autoRefreshEnabled: false,
    groupBy: { aggregateFunction: 'average', groupByKeys: [{ mode: 'tag', groupByData: 'variant' }] },
    globalLineChartConfig: { xAxisKey: 'step', lineSmoothness: 0, selectedXAxisMetricKey: '' },
  };
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'] });
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 820 } });
  await ctx.addInitScript(([id, s]) => {
    localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
    localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
    localStorage.setItem(`MLflowLocalStorage-1.1-ExperimentPage-["${id}"]-ReactComponentState`, JSON.stringify(s));
  }, [exp.experiment_id, state]);
  const runs = `${ui}/#/experiments/${exp.experiment_id}/runs?workflowType=machine_learning` +
    `&orderByKey=${encodeURIComponent('metrics.`aubc/accuracy`')}&orderByAsc=false`;

  let page = await ctx.newPage();                                   // (a) the grouped table
  await page.goto(runs, { waitUntil: 'load' });
  await page.getByText('Group: random').first().waitFor({ timeout: 60000 });
  await page.waitForTimeout(2000);
  await page.screenshot({ path: path.join(out, 'runs_grouped.png') });
  await page.close();

  page = await ctx.newPage();                                       // (b) the accuracy chart
  await page.goto(runs + '&compareRunsMode=CHART', { waitUntil: 'load' });
  await page.getByText('Group: random').first().waitFor({ timeout: 60000 });
  await page.waitForTimeout(4000);
  // only the chart `accuracy` (the search box takes a regular expression), then its full-screen view
  await page.getByPlaceholder('Search metric charts').fill('^accuracy$');
  await page.waitForTimeout(2500);
  // the card's full-screen button sits just before its menu button
  await page.getByTestId('experiment-view-compare-runs-card-menu').first()
    .locator('xpath=preceding::button[1]').click();
  await page.waitForTimeout(3500);
  await page.screenshot({ path: path.join(out, 'accuracy_chart.png') });
  await page.close();

  page = await ctx.newPage();                                       // (c) the HTML report
  await page.goto(`${ui}/#/experiments/${exp.experiment_id}/runs/${parent}/artifacts/report/report.html` +
    '?workflowType=machine_learning', { waitUntil: 'load' });
  await page.waitForTimeout(8000);
  await page.screenshot({ path: path.join(out, 'report_html.png') });
  await browser.close();
  console.log(`screenshots of experiment ${experiment} (parent run ${parent}) in ${out}`);
})().catch(e => { console.error(e.message); process.exit(1); });
