// Package service serves pagecast's dirty-page forecasts over HTTP.
//
// Each VM it knows is fed epochs of dirtied pages, from a trace file
// replayed at its recorded pace or from a live collector, and keeps a
// predictor.Model up to date with them. Before each epoch is observed, the
// forecast made for it is scored against what happened; the JSON API
// returns per-page probabilities, the predicted hot set and the predicted
// dirty rate, and /metrics exports predicted against actual dirty pages per
// epoch so a dashboard can plot one over the other.
package service
