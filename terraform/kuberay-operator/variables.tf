variable "region" {
  description = "AWS region of the cluster."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "Name of the EKS cluster made by ../aws (its cluster_name output)."
  type        = string
  default     = "streammine"
}

variable "kuberay_version" {
  description = "Version of the kuberay-operator Helm chart (= the KubeRay version). Pinned: the CRDs the k8s/ manifests are written against come with it."
  type        = string
  default     = "1.5.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.kuberay_version))
    error_message = "kuberay_version must be an exact chart version (MAJOR.MINOR.PATCH), not a range."
  }
}

variable "operator_namespace" {
  description = "Namespace of the KubeRay operator (not the namespace of the Ray clusters; the operator watches all namespaces by default)."
  type        = string
  default     = "ray-system"
}

variable "kuberay_operator_values" {
  description = "Extra values files (YAML strings) for the kuberay-operator chart, e.g. resources or a single watched namespace."
  type        = list(string)
  default     = []
}

variable "install_nvidia_device_plugin" {
  description = "Whether to install the NVIDIA device plugin (needed with the AL2023 NVIDIA AMI; Bottlerocket NVIDIA AMIs ship their own)."
  type        = bool
  default     = true
}

variable "nvidia_device_plugin_version" {
  description = "Version of the nvidia-device-plugin Helm chart."
  type        = string
  default     = "0.17.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.nvidia_device_plugin_version))
    error_message = "nvidia_device_plugin_version must be an exact chart version (MAJOR.MINOR.PATCH)."
  }
}
