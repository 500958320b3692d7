"""The serving contract, shared by the pipeline's export stage and the predictor
(flask_app/): the manifest format and its reader (`manifest`, standard library only) and
the served model (`model`, numpy + onnxruntime only). Nothing here imports scikit-learn,
pandas or the web app, so the serving image copies this package and flask_app/ alone.
"""
