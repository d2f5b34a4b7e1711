// The chart's prometheus-operator resources (ServiceMonitor, PrometheusRule) against
// the CRD schemas, as @kubernetes-models/prometheus-operator generated them. Usage:
// node validate-crds.mjs FILE... (multi-document YAML from `helm template`). Exits 1
// on an invalid resource; prints how many were checked.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { ServiceMonitor, PrometheusRule };
let checked = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const resource = doc.toJS();
    if (!resource || resource.apiVersion !== "monitoring.coreos.com/v1") continue;
    const Model = models[resource.kind];
    if (!Model) {
      console.error(`${file}: ${resource.kind} has no schema here`);
      failed++;
      continue;
    }
    try {
      new Model(resource).validate();
      checked++;
    } catch (e) {
      console.error(`${file}: ${resource.kind} ${resource.metadata?.name}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`prometheus-operator resources: ${checked} valid, ${failed} invalid`);
process.exit(failed ? 1 : 0);
