// The one place that imports the node-graph library (installed by npm, served from node_modules).
export * from "../node_modules/@comfyorg/litegraph/dist/litegraph.es.js";
