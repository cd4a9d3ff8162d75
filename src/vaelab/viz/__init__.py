"""Pictures of a model: figures, the offline HTML report and the interactive explorer."""
