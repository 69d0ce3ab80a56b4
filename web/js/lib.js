// The one place that imports the node-graph library (installed by npm, served at /lib/ from web/node_modules).
export * from "../lib/@comfyorg/litegraph/dist/litegraph.es.js";
