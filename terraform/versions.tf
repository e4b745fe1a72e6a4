terraform {
  # 1.9 is the first version whose variable validations may refer to other variables
  # (max_executions is checked against min_executions).
  required_version = ">= 1.9"

  # State stays out of the work tree: `cargo xtask lab --azure` passes the file's path at init
  # (`-backend-config=path=<state dir>/terraform/terraform.tfstate`) and sets TF_DATA_DIR beside it.
  # Run by hand without them, terraform keeps `terraform.tfstate` here, which .gitignore and
  # .dockerignore both exclude (the state holds the namespace's keys and connection strings).
  backend "local" {}

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 5.x is the current major; `identity_id` on job scale rules exists since 4.73.
      version = "~> 5.2"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

provider "azurerm" {
  # Empty means "take ARM_SUBSCRIPTION_ID"; `cargo xtask lab --azure` sets it from `az account show`.
  subscription_id = var.subscription_id

  features {
    resource_group {
      # The lab is torn down as a whole; a leftover (e.g. a portal test) must not block `terraform destroy`
      # and leave the rest billing.
      prevent_deletion_if_contains_resources = false
    }
  }
}
