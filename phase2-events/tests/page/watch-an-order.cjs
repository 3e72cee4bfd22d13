// A learner's first order, in a real (headless) browser: open the page the order API
// serves, order two items, and wait until the order's card says "delivered" — every
// status having arrived over the notification service's WebSocket.
//
// Run by tests/page.rs: `node watch-an-order.cjs URL`, with NODE_PATH pointing at a
// playwright-core install and CHROMIUM at a Chromium binary (`cargo xtask test` sets
// both: playwright-core from the npm registry, Chromium from Debian's packages).
// Prints one JSON line with what it saw; exits 1 (with the page's text) otherwise.
"use strict";
const { chromium } = require("playwright-core");

const url = process.argv[2];
const timeoutMs = Number(process.env.PAGE_TIMEOUT_MS || 60000);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    // Root in a container or CI: Chromium's sandbox needs user namespaces it may not have.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  try {
    await page.goto(url);
    await page.getByTestId("qty-pizza-margherita").fill("2");
    await page.getByTestId("qty-cola").fill("1");
    await page.getByTestId("order").click();

    const card = page.locator('[data-testid^="order-"]').first();
    await card.waitFor({ timeout: 10000 });
    await card.locator('[data-testid="status"]', { hasText: "delivered" }).waitFor({ timeout: timeoutMs });

    const steps = await card.locator('[data-testid="steps"] li')
      .evaluateAll((items) => items.map((item) => item.dataset.status || item.textContent));
    const result = {
      order_id: await card.getByTestId("order-id").textContent(),
      request_id: await card.getByTestId("request-id").textContent(),
      trace_id: await card.getByTestId("trace-id").textContent(),
      statuses: steps,
      console_errors: consoleErrors,
    };
    console.log(JSON.stringify(result));
  } catch (error) {
    console.error(String(error));
    console.error("--- the page said ---\n" + (await page.locator("body").innerText().catch(() => "?")));
    console.error("--- console errors ---\n" + consoleErrors.join("\n"));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
