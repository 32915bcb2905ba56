output "operator_namespace" {
  description = "Namespace the KubeRay operator runs in."
  value       = helm_release.kuberay_operator.namespace
}

output "kuberay_version" {
  description = "Installed kuberay-operator chart version."
  value       = helm_release.kuberay_operator.version
}

output "kuberay_operator_status" {
  description = "Status of the kuberay-operator Helm release (deployed when healthy)."
  value       = helm_release.kuberay_operator.status
}

output "nvidia_device_plugin_version" {
  description = "Installed nvidia-device-plugin chart version, or null when not installed."
  value       = one(helm_release.nvidia_device_plugin[*].version)
}
