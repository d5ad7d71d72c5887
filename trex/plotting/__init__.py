"""Figures, always written to PNG files: correlation vs number of demos with the
episode-length baseline, true vs predicted returns, and policy-return curves.

Public names are imported on first use (``from trex.plotting import X``), so importing the
package stays cheap and the sub-packages import no more of each other than they use."""

from trex._lazy import lazy_exports

_EXPORTS = {
    "PlotRewardSaliencyConfig": "trex.plotting.saliency",
    "plot_saliency_grid": "trex.plotting.saliency",
    "reward_saliency_figure": "trex.plotting.saliency",
    "BASELINE_COLUMNS": "trex.plotting.correlations",
    "DemoPrediction": "trex.plotting.correlations",
    "METRIC_COLORS": "trex.plotting.correlations",
    "METRIC_LABELS": "trex.plotting.correlations",
    "correlation_summary": "trex.plotting.correlations",
    "plot_correlations": "trex.plotting.correlations",
    "plot_reward_predictions": "trex.plotting.correlations",
    "prediction_scale": "trex.plotting.correlations",
    "save_png": "trex.plotting.correlations",
    "BASELINES_COLUMNS": "trex.plotting.policy_returns",
    "CurveGroup": "trex.plotting.policy_returns",
    "HeldOutScore": "trex.plotting.policy_returns",
    "PlotPolicyReturnsConfig": "trex.plotting.policy_returns",
    "RunCurve": "trex.plotting.policy_returns",
    "TEST_CSV_COLUMNS": "trex.plotting.policy_returns",
    "TRUE_RETURN_COLUMNS": "trex.plotting.policy_returns",
    "group_curves": "trex.plotting.policy_returns",
    "plot_policy_returns": "trex.plotting.policy_returns",
    "policy_returns_figure": "trex.plotting.policy_returns",
    "read_curve": "trex.plotting.policy_returns",
    "read_held_out_scores": "trex.plotting.policy_returns",
    "read_reference_curves": "trex.plotting.policy_returns",
    "run_label": "trex.plotting.policy_returns",
    "COLUMN_HEADINGS": "trex.plotting.tables",
    "DEFAULT_METRICS": "trex.plotting.tables",
    "MARKER_RE": "trex.plotting.tables",
    "METRICS": "trex.plotting.tables",
    "PICK_NAMES": "trex.plotting.tables",
    "TABLE_KINDS": "trex.plotting.tables",
    "TableBlock": "trex.plotting.tables",
    "TableSpec": "trex.plotting.tables",
    "VARIANT_LABELS": "trex.plotting.tables",
    "WHOLE_RANGE": "trex.plotting.tables",
    "find_tables": "trex.plotting.tables",
    "fmt": "trex.plotting.tables",
    "fmt_group_value": "trex.plotting.tables",
    "fmt_interval": "trex.plotting.tables",
    "fmt_spread": "trex.plotting.tables",
    "parse_spec": "trex.plotting.tables",
    "render_document": "trex.plotting.tables",
    "render_table": "trex.plotting.tables",
    "rm_group_summary": "trex.plotting.tables",
    "to_markdown": "trex.plotting.tables",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
