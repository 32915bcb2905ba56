provider "aws" {
  region = var.region
}

# The cluster made by ../aws, looked up by name; credentials come from `aws eks get-token` (the AWS CLI) with the
# caller's own AWS identity, which needs an EKS access entry (the cluster creator has one).
data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

provider "helm" {
  kubernetes {
    host                   = data.aws_eks_cluster.this.endpoint
    cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)

    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", var.cluster_name, "--region", var.region]
    }
  }
}
