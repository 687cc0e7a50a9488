//! The AdmissionReview the webhook sends back, written straight to bytes: the same JSON as
//! kube-core's `AdmissionReview` with the patch as a base64 string (the API server decodes
//! `[]byte` from base64; kube-core's `Vec<u8>` would write an array of numbers).

use base64::Engine as _;
use kube::core::admission::AdmissionResponse;

/// The review answering `response`, with `patch` (a serialised JSON patch) when there is one.
/// The envelope's strings go through serde_json (escaped); the patch's base64 alphabet needs no
/// escaping, so it is encoded straight into the buffer, which is sized once.
pub fn encode(response: &AdmissionResponse, patch: Option<&[u8]>) -> Vec<u8> {
    let patch_len = patch.map_or(0, |p| p.len().div_ceil(3) * 4);
    let mut out = Vec::with_capacity(256 + response.result.message.len() + patch_len);
    out.extend_from_slice(b"{\"apiVersion\":");
    let written = string(&mut out, &response.types.api_version)
        .and_then(|()| {
            out.extend_from_slice(b",\"kind\":");
            string(&mut out, &response.types.kind)
        })
        .and_then(|()| {
            out.extend_from_slice(b",\"response\":{\"uid\":");
            string(&mut out, &response.uid)
        })
        .and_then(|()| {
            out.extend_from_slice(if response.allowed {
                b",\"allowed\":true,\"status\":"
            } else {
                b",\"allowed\":false,\"status\":"
            });
            serde_json::to_writer(&mut out, &response.result)
        });
    if let Err(e) = written {
        // Never an empty answer: the API server needs the uid and a decision.
        tracing::error!(error = %e, "cannot serialise the admission response; refusing the object");
        return serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": { "uid": response.uid, "allowed": false,
                          "status": { "code": 500, "message": format!("rotor: cannot serialise the answer: {e}") } },
        })
        .to_string()
        .into_bytes();
    }
    if let Some(patch) = patch {
        out.extend_from_slice(b",\"patch\":\"");
        let at = out.len();
        out.resize(at + patch_len, 0);
        let encoded = base64::engine::general_purpose::STANDARD
            .encode_slice(patch, &mut out[at..])
            .unwrap_or(0);
        out.truncate(at + encoded);
        out.extend_from_slice(b"\",\"patchType\":\"JSONPatch\"");
    }
    out.extend_from_slice(b"}}");
    out
}

fn string(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    serde_json::to_writer(out, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::DynamicObject;
    use kube::core::admission::AdmissionReview;

    fn request() -> kube::core::admission::AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "operation": "CREATE", "userInfo": {}, "object": { "metadata": {} },
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn the_answer_is_kube_cores_review_with_the_patch_as_base64() {
        let response = AdmissionResponse::from(&request());
        for r in [response.clone(), response.deny("no")] {
            let ours: serde_json::Value = serde_json::from_slice(&encode(&r, None)).unwrap();
            let kube_core = serde_json::to_value(r.into_review()).unwrap();
            assert_eq!(ours, kube_core);
        }
        let response = AdmissionResponse::from(&request());
        let ours: serde_json::Value =
            serde_json::from_slice(&encode(&response, Some(b"[]"))).unwrap();
        assert_eq!(ours["response"]["patch"], "W10=");
        assert_eq!(ours["response"]["patchType"], "JSONPatch");
        assert_eq!(ours["response"]["uid"], "u-1");
        assert_eq!(ours["apiVersion"], "admission.k8s.io/v1");
    }
}
