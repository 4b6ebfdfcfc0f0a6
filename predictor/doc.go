// Package predictor forecasts which guest pages a virtual machine will
// dirty next: for every page, the probability that it is written in the
// next epoch, or within the next h epochs ("before the current pre-copy
// round ends"). The migrator uses the forecast to defer pages that are
// about to be dirtied again instead of resending them every round.
//
// The model (Model, after Wei et al.) combines temporal locality, the
// page's own recency-weighted write history, with spatial locality, the
// recent writes to its neighbours, and with the cohort of pages last
// written in the same epoch, in a logistic regression whose weights are
// fitted to each VM and refitted online as the trace unfolds. Its state
// is 16 bytes a page. Predict is a single pass over flat arrays.
//
// Baselines are judged the same way: dirty last epoch ⇒ dirty next
// (NewLastEpoch), the write frequency over recent epochs (NewFrequency)
// and a two-state Markov chain per page (NewMarkov).
//
// Evaluate walks a trace forward, predicting epoch t from the epochs
// before it, and scores every predictor on the same (page, epoch) pairs:
// precision, recall and F1 at a threshold, Brier score, ROC AUC,
// calibration (reliability bins, expected calibration error) and the
// predicted against the actual number of dirty pages per epoch.
// EvaluateFile does it for a trace file in one call; PlotCalibration and
// PlotEpochs draw the results; `pagecast predict eval` prints them.
package predictor
