// Reads a status page the way Statuspage consumers do: through the `statuspage.io` client
// library from npm, its API URL pointed at probe's feeds. Prints what each call returned, as
// one JSON object. Usage: node statuspage_consumer.js BASE_URL
const { Statuspage } = require('statuspage.io');

(async () => {
  const page = new Statuspage('probe');
  page.setApiUrl(process.argv[2]);
  const out = {
    summary: await page.api.getSummary(),
    status: await page.api.getStatus(),
    components: await page.api.getComponents(),
    incidents: await page.api.incidents.getAll(),
    unresolved: await page.api.incidents.getUnresolved(),
    maintenances: await page.api.scheduledMaintenances.getAll(),
    upcoming: await page.api.scheduledMaintenances.getUpcoming(),
  };
  process.stdout.write(JSON.stringify(out));
})().catch((e) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
