# The KubeRay operator (CRDs RayCluster, RayJob, RayService and their controller) and the NVIDIA device plugin,
# which advertises nvidia.com/gpu on the GPU nodes so that Ray GPU pods can request it. Both charts are pinned.

resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.kuberay_version
  namespace        = var.operator_namespace
  create_namespace = true

  atomic          = true
  cleanup_on_fail = true
  wait            = true
  timeout         = 600

  values = var.kuberay_operator_values
}

resource "helm_release" "nvidia_device_plugin" {
  count = var.install_nvidia_device_plugin ? 1 : 0

  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = var.nvidia_device_plugin_version
  namespace        = "nvidia-device-plugin"
  create_namespace = true

  atomic          = true
  cleanup_on_fail = true

  # On the GPU node group only (labelled nvidia.com/gpu.present=true by ../modules/eks), through its taint.
  values = [yamlencode({
    affinity = {
      nodeAffinity = {
        requiredDuringSchedulingIgnoredDuringExecution = {
          nodeSelectorTerms = [{
            matchExpressions = [{ key = "nvidia.com/gpu.present", operator = "In", values = ["true"] }]
          }]
        }
      }
    }
    tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]
}
