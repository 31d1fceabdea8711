"""What a model server does with an export, in a fresh interpreter that never imports darts_tf: the TF1 session
loader (the path of TF Serving's C++ LoadSavedModel, KServe and `saved_model_cli run`) and the export's signatures.
Run as `python -c CLIENT ARGS...`; each writes its outputs to an .npz."""

import textwrap

# CNN: 'serving_default' on uint8 images, and 'serving_bytes' on a REST request whose {"b64": ...} instances are
# base64-decoded into the `image_bytes` string tensor, as TF Serving decodes them.
# Arguments: export_dir images.npy request.json out.npz
CNN_SESSION_CLIENT = textwrap.dedent("""
    import base64, json, sys
    import numpy as np
    import tensorflow as tf
    export_dir, images_npy, request_json, out_npz = sys.argv[1:5]
    assert "darts_tf" not in sys.modules
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        def run(name, feeds):
            sig = meta.signature_def[name]
            fetches = {k: v.name for k, v in sig.outputs.items()}
            return sess.run(fetches, {sig.inputs[k].name: v for k, v in feeds.items()})
        default = run("serving_default", {"images": np.load(images_npy)})
        with open(request_json) as f:
            request = json.load(f)
        blobs = np.array([base64.b64decode(i["b64"]) for i in request["instances"]], dtype=object)
        from_bytes = run(request["signature_name"], {"image_bytes": blobs})
        shape = meta.signature_def["serving_default"].inputs["images"].tensor_shape
    np.savez(out_npz, probabilities=default["probabilities"], classes=default["classes"].astype(str),
             bytes_probabilities=from_bytes["probabilities"], bytes_classes=from_bytes["classes"].astype(str),
             input_shape=[d.size for d in shape.dim])
    assert "darts_tf" not in sys.modules
""")

# RNN: 'serving_default' and 'with_hidden' on token ids, 'serving_text' on sentences.
# Arguments: export_dir tokens.npy sentences.json out.npz
RNN_SESSION_CLIENT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    export_dir, tokens_npy, sentences_json, out_npz = sys.argv[1:5]
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        def run(name, feeds):
            sig = meta.signature_def[name]
            return sess.run({k: v.name for k, v in sig.outputs.items()},
                            {sig.inputs[k].name: v for k, v in feeds.items()})
        tokens = np.load(tokens_npy)
        first = run("serving_default", {"tokens": tokens})
        second = run("with_hidden", {"tokens": tokens, "hidden": first["hidden"]})
        with open(sentences_json) as f:
            text = run("serving_text", {"sentences": np.array(json.load(f), dtype=object)})
    assert "darts_tf" not in sys.modules
    np.savez(out_npz, log_probs=first["log_probs"], hidden=first["hidden"], log_probs2=second["log_probs"],
             hidden2=second["hidden"], **{"text_" + k: (v.astype(str) if v.dtype == object else v)
                                          for k, v in text.items()})
""")
