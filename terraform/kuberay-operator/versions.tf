terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 6.0"
    }
    # 2.x: the kubernetes { } block syntax below (3.x turned it into an attribute)
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
  }

  # Partial configuration, like ../aws; use a different key, e.g. streammine/kuberay-operator.tfstate.
  backend "s3" {}
}
