"""Label maps and editing: the label table, edit tools, morphology, statistics, the editing session."""
